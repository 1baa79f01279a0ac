#!/usr/bin/env python3
"""Extract every complete `ai-gateway` traffic policy from the reference docs.

Sources (relative to the repository root, i.e. <repo>/../shared):
  seeds/ngrok-ollama-guide.md            -> testdata/policies/guide/NN-short-name.yaml
  reference/ngrok-docs/**/*.mdx          -> testdata/policies/docs/<dir>-<page>-NN.yaml

A "complete" policy is a fenced ```yaml code block whose content has a
top-level phase key (on_http_request:, on_http_response:, ...) and a
`type: ai-gateway` action.  The YAML is copied verbatim: the only change is
removing the common indentation of the block (blocks nested in JSX tags such
as <Step>, <Tab>, <CodeGroup> are indented).  Line endings are kept as in the
source file (some .mdx pages use CRLF); the header line uses the same ending.

Each output file starts with `# source: <path>:<line of the opening fence>`.
Everything else found in a code block that looks like policy / gateway
configuration but is not a complete ai-gateway policy is listed in
MANIFEST.md as skipped, with the reason.

Run from anywhere:  python3 testdata/policies/extract.py
Requires PyYAML only for the validity check (pip install pyyaml).
"""

import os
import re
import sys

try:
    import yaml
except ImportError:  # validity column becomes "unchecked"
    yaml = None

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SHARED = os.path.abspath(os.path.join(REPO, "..", "shared"))
OUT_GUIDE = os.path.join(HERE, "guide")
OUT_DOCS = os.path.join(HERE, "docs")
MANIFEST = os.path.join(HERE, "MANIFEST.md")

GUIDE_SRC = "seeds/ngrok-ollama-guide.md"
DOCS_ROOT = "reference/ngrok-docs"

# Short names for the guide's policies, in order of appearance.
GUIDE_NAMES = [
    "basic",
    "restrict-ollama-only",
    "failover-to-openai",
    "timeouts",
    "multiple-instances",
    "metadata",
]

PHASES = (
    "on_http_request",
    "on_http_response",
    "on_tcp_connect",
    "on_event_stream_message",
)
PHASE_RE = re.compile(r"^(%s)\s*:" % "|".join(PHASES))
AIGW_RE = re.compile(r"""^\s*(-\s+)?type\s*:\s*["']?ai-gateway["']?\s*(#.*)?$""")
OPEN_RE = re.compile(r"^([ \t]*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$")

# An ai-gateway action anywhere in a non-YAML block (e.g. a policy in a JSON string).
AIGW_ANY = re.compile(r"""type\W{0,5}ai-gateway""")
# Keys that mark a JSON block as ai-gateway related (for the skipped list).
GW_KEYS = re.compile(
    r"(ai-gateway|^\s*-?\s*providers\s*:|model_selection|api_key_selection|"
    r"only_allow_configured|per_request_timeout|total_timeout|\"providers\"\s*:|"
    r"base_url\s*:|api_keys\s*:|id_aliases|supported_api_surfaces|"
    r"max_input_tokens|max_output_tokens)",
    re.M,
)


def eol_of(line):
    if line.endswith("\r\n"):
        return "\r\n"
    if line.endswith("\n"):
        return "\n"
    return ""


def bare(line):
    return line.rstrip("\r\n")


def code_blocks(text):
    """Yield (start_line (1-based, opening fence), lang, info, lines, eol, fence_indent)."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = OPEN_RE.match(bare(lines[i]))
        if not m:
            i += 1
            continue
        indent, fence, lang, rest = m.groups()
        start = i + 1
        eol = eol_of(lines[i]) or "\n"
        j = i + 1
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{%d,}" % len(fence) + r"\s*$")
        body = []
        while j < len(lines) and not close.match(bare(lines[j])):
            body.append(lines[j])
            j += 1
        yield start, lang.lower(), (lang + rest).strip(), body, eol, indent
        i = j + 1


def dedent(body):
    """Remove the common leading whitespace of the non-blank lines, nothing else."""
    widths = []
    for ln in body:
        b = bare(ln)
        if b.strip():
            widths.append(len(b) - len(b.lstrip(" \t")))
    n = min(widths) if widths else 0
    out = []
    for ln in body:
        b = bare(ln)
        if b.strip():
            out.append(ln[n:])
        else:
            # whitespace-only line: drop up to n whitespace characters
            k = 0
            while k < n and k < len(b) and b[k] in " \t":
                k += 1
            out.append(ln[k:])
    return "".join(out), n


def classify(content, lang):
    """Return (is_complete, reason_if_not)."""
    lines = [bare(l) for l in content.splitlines()]
    phase = [l for l in lines if PHASE_RE.match(l)]
    aigw = [l for l in lines if AIGW_RE.match(l)]
    if phase and aigw:
        return True, None
    top = []
    for l in lines:
        m = re.match(r"^([A-Za-z_][\w.-]*)\s*:", l)
        if m and m.group(1) not in top:
            top.append(m.group(1))
    if lang not in ("yaml", "yml"):
        what = lang or "untyped"
        if AIGW_ANY.search(content):
            return False, ("%s block: the ai-gateway policy is an escaped string inside it, "
                           "not a YAML document" % what)
        return False, "%s block, not YAML (gateway output/config keys, not a policy)" % what
    if aigw and not phase:
        nested = [l for l in lines if re.match(r"^\s+(%s)\s*:" % "|".join(PHASES), l)]
        if nested:
            return False, ("policy embedded in another document (top-level keys: %s), "
                           "not a top-level traffic policy" % ", ".join(top))
        return False, "fragment: ai-gateway action without a phase key (top-level keys: %s)" % (
            ", ".join(top) or "none, bare list item")
    if phase and not aigw:
        return False, "traffic policy without an ai-gateway action"
    if not top:
        first = next((l for l in lines if l.strip() and not l.lstrip().startswith("#")), "")
        m = re.match(r"^\s*-\s*([A-Za-z_][\w.-]*)\s*:", first)
        if m:
            return False, "fragment: bare YAML list (items start with `%s:`), no phase key" % m.group(1)
        if re.match(r"^\s*-", first):
            return False, "fragment: bare list of CEL strategy strings, no phase key"
        return False, "fragment: CEL expressions / field paths, not a YAML mapping"
    return False, "fragment: no phase key (top-level keys: %s)" % ", ".join(top)


def check_yaml(content):
    if yaml is None:
        return None, "PyYAML not installed"
    try:
        docs = list(yaml.safe_load_all(content))
    except yaml.YAMLError as e:
        return False, " ".join(str(e).split())
    # structural check: ai-gateway under a phase, directly or in rule actions
    count = 0
    notes = []
    for d in docs:
        if not isinstance(d, dict):
            continue
        for ph in PHASES:
            items = d.get(ph)
            if items is None:
                continue
            if not isinstance(items, list):
                notes.append("policy shape is wrong as written: `%s` is a %s, not a list of "
                             "rules/actions (the ai-gateway action is not reachable)" % (
                                 ph, type(items).__name__.replace("dict", "mapping")))
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                if item.get("type") == "ai-gateway":
                    count += 1
                for act in item.get("actions") or []:
                    if isinstance(act, dict) and act.get("type") == "ai-gateway":
                        count += 1
    if count > 1:
        notes.append("%d ai-gateway actions in one policy (in separate rules)"
                     % count)
    return True, "; ".join(notes) or None


def write(path, src, line, content, eol):
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("# source: %s:%d%s" % (src, line, eol))
        f.write(content)
        if content and not content.endswith("\n"):
            f.write(eol)


def main():
    for d in (OUT_GUIDE, OUT_DOCS):
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.endswith(".yaml"):
                os.remove(os.path.join(d, name))

    extracted = []  # (group, out_rel, src, line, valid, note, crlf)
    skipped = []  # (src, line, info, reason, contains an ai-gateway action)

    sources = [("guide", GUIDE_SRC)]
    docs_abs = os.path.join(SHARED, DOCS_ROOT)
    mdx = []
    for root, _dirs, files in os.walk(docs_abs):
        for fn in files:
            if fn.endswith(".mdx"):
                mdx.append(os.path.relpath(os.path.join(root, fn), SHARED))
    sources += [("docs", p) for p in sorted(mdx)]

    for group, src in sources:
        with open(os.path.join(SHARED, src), encoding="utf-8", newline="") as f:
            text = f.read()
        n = 0
        for start, lang, info, body, eol, indent in code_blocks(text):
            raw = "".join(body)
            content, width = dedent(body)
            ok, reason = classify(content, lang)
            if not ok:
                if lang in ("yaml", "yml") or AIGW_ANY.search(raw) or (
                        lang == "json" and GW_KEYS.search(raw)):
                    skipped.append((src, start, info, reason, bool(AIGW_ANY.search(raw))))
                continue
            n += 1
            if group == "guide":
                short = GUIDE_NAMES[n - 1] if n <= len(GUIDE_NAMES) else "policy"
                out = os.path.join(OUT_GUIDE, "%02d-%s.yaml" % (n, short))
            else:
                rel = os.path.relpath(src, DOCS_ROOT)
                d = os.path.basename(os.path.dirname(rel))
                page = os.path.splitext(os.path.basename(rel))[0]
                out = os.path.join(OUT_DOCS, "%s-%s-%02d.yaml" % (d, page, n))
            write(out, src, start, content, eol)
            valid, note = check_yaml(content)
            if width != len(indent.expandtabs()):
                note = (note + "; " if note else "") + (
                    "content indent %d differs from fence indent %d" % (width, len(indent)))
            extracted.append((group, os.path.relpath(out, HERE), src, start, valid,
                              note, eol == "\r\n"))

    # ---- accounting of `type: ai-gateway` occurrences in the docs ----
    occ_total = 0
    for _g, src in sources:
        if _g != "docs":
            continue
        with open(os.path.join(SHARED, src), encoding="utf-8") as f:
            occ_total += sum(1 for l in f if AIGW_ANY.search(l))
    occ_extracted = 0
    multi = 0
    for e in extracted:
        if e[0] == "docs":
            with open(os.path.join(HERE, e[1]), encoding="utf-8") as f:
                k = sum(1 for l in f if AIGW_ANY.search(l))
            occ_extracted += k
            multi += k > 1
    occ_skipped = [(src, line, reason) for src, line, info, reason, has in skipped
                   if src.startswith(DOCS_ROOT) and has]

    # ---- manifest ----
    g = [e for e in extracted if e[0] == "guide"]
    d = [e for e in extracted if e[0] == "docs"]
    invalid = [e for e in extracted if e[4] is False]
    crlf = [e for e in extracted if e[6]]
    L = []
    L.append("# Policy corpus manifest")
    L.append("")
    L.append("Generated by `extract.py` (do not edit by hand). Sources are relative to "
             "`../shared` (the `shared` directory beside the repository).")
    L.append("")
    L.append("Each file is the verbatim YAML of one fenced code block with the block's common "
             "indentation removed, preceded by a `# source: FILE:LINE` header (LINE = opening fence). "
             "Files taken from CRLF sources keep CRLF line endings (marked CRLF below).")
    L.append("")
    L.append("Totals: %d extracted (%d guide, %d docs), %d skipped fragments, "
             "%d not valid YAML as written, %d with CRLF line endings." % (
                 len(extracted), len(g), len(d), len(skipped), len(invalid), len(crlf)))
    L.append("")
    L.append("Accounting: the docs contain %d occurrences of `type: ai-gateway`; %d are in the "
             "%d extracted docs policies (%d of them have more than one) and the other %d "
             "are in blocks that are not top-level YAML policies:" % (
                 occ_total, occ_extracted, len(d), multi, occ_total - occ_extracted))
    L.append("")
    for src, line, reason in occ_skipped:
        L.append("- `%s:%d`: %s" % (src, line, reason))
    L.append("")
    L.append("## Extracted policies")
    L.append("")
    L.append("| # | File | Source | Line | Valid YAML | Notes |")
    L.append("|---|---|---|---|---|---|")
    for i, (grp, out, src, line, valid, note, is_crlf) in enumerate(extracted, 1):
        v = {True: "yes", False: "**no**", None: "unchecked"}[valid]
        notes = []
        if is_crlf:
            notes.append("CRLF")
        if note and valid is not False:
            notes.append(note)
        L.append("| %d | `%s` | `%s` | %d | %s | %s |" % (
            i, out, src, line, v, "; ".join(notes).replace("|", "\\|")))
    L.append("")
    L.append("## Not valid YAML as written")
    L.append("")
    if invalid:
        for grp, out, src, line, valid, note, _ in invalid:
            L.append("- `%s` (`%s:%d`): %s" % (out, src, line, note.replace("|", "\\|")))
    else:
        L.append("None: every extracted policy parses with PyYAML `safe_load_all`.")
    L.append("")
    L.append("## Skipped fragments")
    L.append("")
    L.append("Code blocks that are YAML, or that contain gateway configuration, but are not a "
             "complete traffic policy with an `ai-gateway` action.")
    L.append("")
    L.append("| Source | Line | Fence info | Reason |")
    L.append("|---|---|---|---|")
    for src, line, info, reason, _has in skipped:
        L.append("| `%s` | %d | `%s` | %s |" % (src, line, info.replace("|", "\\|"),
                                               reason.replace("|", "\\|")))
    L.append("")
    with open(MANIFEST, "w", encoding="utf-8") as f:
        f.write("\n".join(L))

    for grp, out, src, line, valid, note, _ in invalid:
        print("not valid YAML: %s (%s:%d): %s" % (out, src, line, note), file=sys.stderr)
    print("extracted %d policies (guide %d, docs %d); skipped %d fragments; "
          "%d not valid YAML; %d CRLF" % (len(extracted), len(g), len(d), len(skipped),
                                          len(invalid), len(crlf)))


if __name__ == "__main__":
    main()
