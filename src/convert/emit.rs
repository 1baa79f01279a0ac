//! Writes a converted policy as YAML text. By hand rather than through serde: the output keeps
//! the policy format's field order and carries comments (the header, where a provider came from).

use std::fmt::Write as _;

#[derive(Debug, Default)]
pub(crate) struct OutPolicy {
    /// Comment lines for the top of the file, without the leading `# `.
    pub header: Vec<String>,
    pub per_request_timeout: Option<String>,
    pub only_allow_configured_models: bool,
    pub providers: Vec<OutProvider>,
}

#[derive(Debug, Default)]
pub(crate) struct OutProvider {
    pub id: String,
    pub base_url: Option<String>,
    /// `${secrets.get(…)}` templates, never key values.
    pub keys: Vec<String>,
    pub models: Vec<OutModel>,
    /// Where it came from, e.g. `model_list lines 3, 8 (ollama/, ollama_chat/)`.
    pub comment: String,
}

#[derive(Debug, Default)]
pub(crate) struct OutModel {
    pub id: String,
    pub aliases: Vec<String>,
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub(crate) fn write(p: &OutPolicy) -> String {
    let mut o = String::new();
    for line in &p.header {
        if line.is_empty() {
            o.push_str("#\n");
        } else {
            let _ = writeln!(o, "# {line}");
        }
    }
    o.push_str("on_http_request:\n  - type: ai-gateway\n    config:\n");
    if let Some(t) = &p.per_request_timeout {
        let _ = writeln!(o, "      per_request_timeout: {}", q(t));
    }
    // LiteLLM's proxy serves only its model_list; so does the converted policy.
    o.push_str("      only_allow_configured_providers: true\n");
    let _ = writeln!(
        o,
        "      only_allow_configured_models: {}",
        p.only_allow_configured_models
    );
    o.push_str("      providers:\n");
    for pr in &p.providers {
        let _ = writeln!(o, "        # {}", pr.comment);
        let _ = writeln!(o, "        - id: {}", q(&pr.id));
        if let Some(b) = &pr.base_url {
            let _ = writeln!(o, "          base_url: {}", q(b));
        }
        if !pr.keys.is_empty() {
            o.push_str("          api_keys:\n");
            for k in &pr.keys {
                let _ = writeln!(o, "            - value: {}", q(k));
            }
        }
        if !pr.models.is_empty() {
            o.push_str("          models:\n");
            for m in &pr.models {
                let _ = writeln!(o, "            - id: {}", q(&m.id));
                if !m.aliases.is_empty() {
                    let list: Vec<String> = m.aliases.iter().map(|a| q(a)).collect();
                    let _ = writeln!(o, "              id_aliases: [{}]", list.join(", "));
                }
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_yaml_would_misread() {
        assert_eq!(q("llama3.2:1b"), "\"llama3.2:1b\"");
        assert_eq!(q("a\"b"), "\"a\\\"b\"");
        let p = OutPolicy {
            header: vec!["from x".into(), String::new()],
            providers: vec![OutProvider {
                id: "ollama".into(),
                comment: "c".into(),
                models: vec![OutModel {
                    id: "yes".into(),
                    aliases: vec!["on".into()],
                }],
                ..OutProvider::default()
            }],
            ..OutPolicy::default()
        };
        let text = write(&p);
        assert!(text.starts_with("# from x\n#\non_http_request:\n"));
        assert!(text.contains("- id: \"yes\"\n              id_aliases: [\"on\"]\n"));
    }
}
