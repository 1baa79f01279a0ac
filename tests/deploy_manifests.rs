//! The deployment files stay true to aigw: `deploy/kubernetes/` (every YAML document parsed),
//! the `Dockerfile` and `deploy/nginx/aigw.conf`. The container arguments parse with aigw's own
//! CLI, the ConfigMap's policy passes `aigw validate`, probes hit `/healthz` and `/readyz` on the
//! container port, selectors select the gateway's pods, the grace period outlasts the drain,
//! pods run as non-root on a read-only root filesystem, and the manifests' own arguments start a
//! gateway (every address moved to 127.0.0.1) whose probe paths answer without the token and
//! which drains on SIGTERM and exits 0.
//!
//! When `kubectl` (its built-in kustomize), `kubeconform` or `nginx` is on PATH it is run too;
//! otherwise that check says it was skipped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aigw::cli::{Cli, Command as AigwCommand, ServeArgs};
use clap::Parser;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/kubernetes")
}

/// One YAML document of a manifest file.
#[derive(Debug, Clone)]
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every document of one file.
fn parse_file(path: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let values: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    values
        .into_iter()
        .filter(|v| !v.is_null())
        .map(|value| Doc {
            file: file.clone(),
            value,
        })
        .collect()
}

/// The YAML files of deploy/kubernetes, sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn kustomization() -> Value {
    let docs = parse_file(&k8s_dir().join("kustomization.yaml"));
    assert_eq!(docs.len(), 1, "kustomization.yaml holds one document");
    docs.into_iter().next().unwrap().value
}

/// `resources:` of kustomization.yaml.
fn kustomize_resources() -> Vec<String> {
    kustomization()["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a path").to_string())
        .collect()
}

/// What `kubectl apply -k deploy/kubernetes` applies.
fn applied() -> Vec<Doc> {
    kustomize_resources()
        .iter()
        .flat_map(|r| parse_file(&k8s_dir().join(r)))
        .collect()
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(sel) = selector.as_object() else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The Deployment whose pods run aigw: its container's image is `aigw` (any registry, any tag).
fn gateway(docs: &[Doc]) -> &Doc {
    let found: Vec<&Doc> = of_kind(docs, "Deployment")
        .into_iter()
        .filter(|d| {
            containers(d).iter().any(|c| {
                let image = c["image"].as_str().unwrap_or_default();
                let name = image.rsplit('/').next().unwrap_or_default();
                name == "aigw" || name.starts_with("aigw:") || name.starts_with("aigw@")
            })
        })
        .collect();
    assert_eq!(found.len(), 1, "exactly one Deployment runs the aigw image");
    found[0]
}

fn containers(d: &Doc) -> Vec<&Value> {
    d.value["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn gateway_container(d: &Doc) -> &Value {
    let cs = containers(d);
    assert_eq!(cs.len(), 1, "{}: one container in the aigw pod", d.file);
    cs[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    s.as_str()
                        .unwrap_or_else(|| panic!("expected a string, found {s}"))
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container's arguments, parsed by aigw's own CLI: `serve` and its flags.
fn parse_serve(args: &[String]) -> ServeArgs {
    let argv = std::iter::once("aigw".to_string()).chain(args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: AigwCommand::Serve(serve),
            ..
        }) => *serve,
        Ok(other) => panic!("{args:?} is not `aigw serve`: {other:?}"),
        Err(e) => panic!("aigw does not accept {args:?}:\n{e}"),
    }
}

/// The value after `flag` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .or_else(|| {
            let prefix = format!("{flag}=");
            args.iter().find_map(|a| a.strip_prefix(&prefix))
        })
}

/// The container port a probe or Service names (by name or number).
fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    let ports = container["ports"].as_array()?;
    match port {
        Value::String(name) => ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64()),
        Value::Number(n) => ports
            .iter()
            .find(|p| p["containerPort"].as_u64() == n.as_u64())
            .and_then(|p| p["containerPort"].as_u64()),
        _ => None,
    }
}

/// The ConfigMap's policy file: (key, text).
fn configmap_policy(docs: &[Doc], name: &str) -> (String, String) {
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("no ConfigMap named {name}"));
    let data = cm.value["data"]
        .as_object()
        .expect("the ConfigMap has data");
    let (key, text) = data
        .iter()
        .find(|(k, _)| k.ends_with(".yaml") || k.ends_with(".yml") || k.ends_with(".json"))
        .expect("the ConfigMap holds a policy file");
    (key.clone(), text.as_str().unwrap().to_string())
}

/// The example Secret's `stringData` (placeholders), as environment variables.
fn example_secret_env() -> BTreeMap<String, String> {
    let docs = parse_file(&k8s_dir().join("secret.example.yaml"));
    let secret = docs
        .iter()
        .find(|d| d.kind() == "Secret")
        .expect("secret.example.yaml holds a Secret");
    secret.value["stringData"]
        .as_object()
        .expect("the example Secret uses stringData")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Provider ids of a policy (every ai-gateway action's `providers`).
fn policy_providers(policy: &str) -> Vec<String> {
    let v: Value = serde_saphyr::from_str(policy).expect("the policy is YAML");
    let mut out = Vec::new();
    for phase in ["on_http_request", "on_http_response"] {
        for rule in v[phase].as_array().into_iter().flatten() {
            let actions: Vec<&Value> = match rule["actions"].as_array() {
                Some(a) => a.iter().collect(),
                None => vec![rule],
            };
            for action in actions {
                for p in action["config"]["providers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.push(p["id"].as_str().unwrap().to_string());
                }
            }
        }
    }
    out
}

/// The container's `env` entries that carry a literal value.
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_manifest_parses_and_the_kustomization_applies_what_it_should() {
    let resources = kustomize_resources();
    for r in &resources {
        assert!(
            k8s_dir().join(r).is_file(),
            "kustomization.yaml lists {r}, which does not exist"
        );
    }
    assert!(
        !resources.iter().any(|r| r.contains("secret")),
        "the example Secret holds placeholders: kustomization.yaml must not apply it"
    );
    for path in manifest_files() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let docs = parse_file(&path);
        assert!(!docs.is_empty(), "{file} holds no document");
        if file != "kustomization.yaml" && file != "secret.example.yaml" {
            assert!(
                resources.contains(&file),
                "{file} is in deploy/kubernetes but kustomization.yaml does not list it"
            );
        }
        for d in &docs {
            assert!(
                d.value["apiVersion"].is_string() && !d.kind().is_empty(),
                "{file}: a document without apiVersion or kind"
            );
            if d.kind() == "Kustomization" {
                continue;
            }
            assert!(
                !d.name().is_empty(),
                "{file}: a {} without a name",
                d.kind()
            );
            // Kubernetes refuses labels and annotations that are not strings (`true`, `8080`).
            let mut maps = vec![
                &d.value["metadata"]["labels"],
                &d.value["metadata"]["annotations"],
            ];
            maps.push(&d.value["spec"]["template"]["metadata"]["labels"]);
            maps.push(&d.value["spec"]["template"]["metadata"]["annotations"]);
            for m in maps.into_iter().filter_map(Value::as_object) {
                for (k, v) in m {
                    assert!(
                        v.is_string(),
                        "{file}: {} {}: `{k}: {v}` must be a string (quote it)",
                        d.kind(),
                        d.name()
                    );
                }
            }
        }
    }
    let docs = applied();
    for kind in ["Deployment", "Service", "ConfigMap", "PodDisruptionBudget"] {
        assert!(
            !of_kind(&docs, kind).is_empty(),
            "kubectl apply -k would create no {kind}"
        );
    }
    assert!(
        of_kind(&docs, "Secret").is_empty(),
        "no Secret is applied: it is created by hand (secret.example.yaml)"
    );
    // Names are unique per kind.
    let mut seen = std::collections::BTreeSet::new();
    for d in &docs {
        assert!(
            seen.insert((d.kind().to_string(), d.name().to_string())),
            "{} {} is defined twice",
            d.kind(),
            d.name()
        );
    }
}

#[test]
fn services_and_the_pdb_select_the_pods_they_mean() {
    let docs = applied();
    let deployments = of_kind(&docs, "Deployment");
    for d in &deployments {
        let pod_labels = &d.value["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(&d.value["spec"]["selector"]["matchLabels"], pod_labels),
            "Deployment {}: selector.matchLabels is not a subset of its pod labels",
            d.name()
        );
    }
    for svc in of_kind(&docs, "Service") {
        let selector = &svc.value["spec"]["selector"];
        let selected: Vec<&&Doc> = deployments
            .iter()
            .filter(|d| labels_match(selector, &d.value["spec"]["template"]["metadata"]["labels"]))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "Service {} selects the pods of exactly one Deployment, found {:?}",
            svc.name(),
            selected.iter().map(|d| d.name()).collect::<Vec<_>>()
        );
        let container = containers(selected[0])[0];
        for port in svc.value["spec"]["ports"].as_array().expect("ports") {
            let target = port.get("targetPort").unwrap_or(&port["port"]);
            assert!(
                resolve_port(container, target).is_some(),
                "Service {}: targetPort {target} is no port of {}'s container",
                svc.name(),
                selected[0].name()
            );
        }
    }
    let gw = gateway(&docs);
    let replicas = gw.value["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "several replicas: {replicas}");
    let gw_labels = &gw.value["spec"]["template"]["metadata"]["labels"];
    assert!(
        of_kind(&docs, "Service")
            .iter()
            .any(|s| labels_match(&s.value["spec"]["selector"], gw_labels)),
        "a Service sends traffic to the gateway's pods"
    );
    let pdbs = of_kind(&docs, "PodDisruptionBudget");
    let pdb = pdbs
        .iter()
        .find(|p| labels_match(&p.value["spec"]["selector"]["matchLabels"], gw_labels))
        .expect("a PodDisruptionBudget selects the gateway's pods");
    let min = pdb.value["spec"]["minAvailable"]
        .as_u64()
        .expect("minAvailable as a number");
    assert!(
        min >= 1 && min < replicas,
        "minAvailable {min} keeps a replica up and still lets a node drain ({replicas} replicas)"
    );
}

#[test]
fn the_gateway_container_args_parse_and_fit_the_grace_period() {
    let docs = applied();
    let gw = gateway(&docs);
    let pod = &gw.value["spec"]["template"]["spec"];
    let c = gateway_container(gw);
    assert!(
        c.get("command").is_none() || strings(&c["command"]) == ["aigw"],
        "the image's ENTRYPOINT is aigw: set args, not command"
    );
    let args = strings(&c["args"]);
    let serve = parse_serve(&args);

    // The port it listens on is the container port the probes and the Service use.
    let port = u64::from(serve.listen.port());
    assert!(
        !serve.listen.ip().is_loopback(),
        "--listen {} is unreachable from outside the pod",
        serve.listen
    );
    assert!(
        resolve_port(c, &Value::from(port)).is_some(),
        "--listen port {port} is not a containerPort"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            resolve_port(c, &get["port"]),
            Some(port),
            "{probe} port is the --listen port"
        );
    }

    // Drain: preStop pause + --drain-timeout fits in the grace period, with time to exit.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let drain = serve.drain_timeout.0;
    assert!(
        flag_value(&args, "--drain-timeout").is_some(),
        "--drain-timeout is set explicitly"
    );
    assert!(
        Duration::from_secs(pre_stop) + drain < Duration::from_secs(grace),
        "terminationGracePeriodSeconds ({grace}s) must outlast the preStop pause ({pre_stop}s) \
         plus --drain-timeout ({drain:?})"
    );

    // The policy is read from a ConfigMap mounted as a directory (no subPath: reload sees
    // updates), under the name the ConfigMap gives it.
    let policy_path = serve.policy.policy.clone().expect("--policy is set");
    let mount = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| policy_path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("--policy lies under a volumeMount");
    assert!(
        mount.get("subPath").is_none(),
        "a subPath mount never sees ConfigMap updates: mount the directory"
    );
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .expect("the mount's volume");
    let cm_name = volume["configMap"]["name"]
        .as_str()
        .expect("the policy volume is a ConfigMap");
    let (key, _) = configmap_policy(&docs, cm_name);
    assert_eq!(
        policy_path,
        Path::new(mount["mountPath"].as_str().unwrap()).join(&key),
        "--policy names the ConfigMap's file"
    );

    // --state points at a Service of the kustomization (redis.yaml) when there is one.
    let state = flag_value(&args, "--state").expect("--state is set");
    assert!(serve.state.is_some());
    let host = state
        .split("://")
        .nth(1)
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .split([':', '/'])
        .next()
        .unwrap();
    if kustomize_resources().iter().any(|r| r == "redis.yaml") {
        assert!(
            of_kind(&docs, "Service").iter().any(|s| s.name() == host),
            "--state {state}: no Service {host} in the kustomization"
        );
    }

    // Off loopback aigw needs a token: from the Secret every pod reads.
    let secret_refs: Vec<&str> = c["envFrom"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["secretRef"]["name"].as_str())
        .collect();
    let token_from_key_ref = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["name"] == "AIGW_AUTH_TOKEN" && e["valueFrom"]["secretKeyRef"].is_object());
    let example = example_secret_env();
    let example_name = parse_file(&k8s_dir().join("secret.example.yaml"))[0]
        .name()
        .to_string();
    assert!(
        token_from_key_ref
            || (secret_refs.contains(&example_name.as_str())
                && example.contains_key("AIGW_AUTH_TOKEN")),
        "AIGW_AUTH_TOKEN must come from a Secret (envFrom {secret_refs:?})"
    );
    assert!(
        flag_value(&args, "--auth-token").is_none(),
        "no token in the manifest's args: it belongs in the Secret"
    );

    // AIGW_BASE_URL_<ID> names a provider of the policy.
    let (_, policy) = configmap_policy(&docs, cm_name);
    let ids: Vec<String> = policy_providers(&policy)
        .iter()
        .map(|i| aigw::policy::secrets::env_word(i))
        .collect();
    for name in container_env(c).keys() {
        if let Some(id) = name.strip_prefix("AIGW_BASE_URL_") {
            assert!(
                ids.iter().any(|i| i == id),
                "{name} maps no provider of the policy ({ids:?})"
            );
        }
    }
}

#[test]
fn every_pod_runs_non_root_with_a_read_only_root_filesystem() {
    let docs = applied();
    let deployments = of_kind(&docs, "Deployment");
    for d in &deployments {
        let pod = &d.value["spec"]["template"]["spec"];
        for c in containers(d) {
            let who = format!(
                "Deployment {} container {}",
                d.name(),
                c["name"].as_str().unwrap_or("?")
            );
            let sc = &c["securityContext"];
            let either = |key: &str| {
                sc.get(key)
                    .filter(|v| !v.is_null())
                    .or_else(|| pod["securityContext"].get(key))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            assert_eq!(
                either("runAsNonRoot"),
                Value::Bool(true),
                "{who}: runAsNonRoot"
            );
            assert_ne!(either("runAsUser"), Value::from(0), "{who}: runAsUser 0");
            assert_eq!(
                sc["readOnlyRootFilesystem"],
                Value::Bool(true),
                "{who}: readOnlyRootFilesystem"
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"],
                Value::Bool(false),
                "{who}: allowPrivilegeEscalation"
            );
            assert!(
                strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()),
                "{who}: capabilities.drop ALL"
            );
            assert!(
                sc["capabilities"]["add"].is_null(),
                "{who}: no capability added"
            );
            assert_eq!(
                either("seccompProfile")["type"].as_str(),
                Some("RuntimeDefault"),
                "{who}: seccompProfile RuntimeDefault"
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string()
                    && c["resources"]["limits"]["memory"].is_string(),
                "{who}: memory request and limit"
            );
        }
        assert_ne!(
            pod["automountServiceAccountToken"],
            Value::Bool(true),
            "Deployment {}: the pod needs no API token",
            d.name()
        );
    }

    // The gateway's user is the image's.
    let gw = gateway(&docs);
    let uid = gw.value["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .or_else(|| gateway_container(gw)["securityContext"]["runAsUser"].as_u64());
    if let Some(uid) = uid {
        let user = dockerfile_user();
        assert_eq!(
            user.split(':').next().unwrap().parse::<u64>().ok(),
            Some(uid),
            "runAsUser {uid} is the Dockerfile's USER {user}"
        );
    }
    // Prometheus finds /metrics on the container port.
    let ann = &gw.value["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(ann["prometheus.io/path"].as_str(), Some("/metrics"));
    let port: u64 = ann["prometheus.io/port"]
        .as_str()
        .and_then(|p| p.parse().ok())
        .expect("prometheus.io/port");
    assert!(resolve_port(gateway_container(gw), &Value::from(port)).is_some());
}

#[test]
fn the_configmap_policy_passes_aigw_validate_with_the_example_secret() {
    let docs = applied();
    let gw = gateway(&docs);
    let volume_cm = gw.value["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["configMap"]["name"].as_str())
        .expect("a ConfigMap volume");
    let (key, policy) = configmap_policy(&docs, volume_cm);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(&key);
    std::fs::write(&file, &policy).unwrap();
    // Only the Secret's variables: a `secrets.get` the Secret does not fill is a warning
    // (AIGW-W002), and --deny-warnings fails on it.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.args(["validate", "--deny-warnings", "--color", "never"])
        .arg(&file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AIGW_")) {
        cmd.env_remove(k);
    }
    cmd.envs(example_secret_env());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "aigw validate --deny-warnings refuses the ConfigMap's policy:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The manifests' arguments, run
// ---------------------------------------------------------------------------------------------

struct Running {
    child: std::process::Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over HTTP/1.1: (status, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    // Bodies here are small JSON or text; drop chunk-size lines if chunked.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n.min(after.len())]);
            rest = after.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

#[test]
fn the_manifests_arguments_start_a_gateway_whose_probes_answer_and_which_drains() {
    let docs = applied();
    let gw = gateway(&docs);
    let c = gateway_container(gw);
    let mut args = strings(&c["args"]);
    let serve = parse_serve(&args);
    let cm_name = gw.value["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["configMap"]["name"].as_str())
        .unwrap();
    let (key, policy) = configmap_policy(&docs, cm_name);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join(&key);
    std::fs::write(&policy_file, &policy).unwrap();

    // The pod's arguments with every address moved to 127.0.0.1: the listener on a free port,
    // Redis and every provider on a port nothing listens on (no traffic leaves the machine).
    let nowhere = closed_port();
    let set = |args: &mut Vec<String>, flag: &str, value: String| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value;
    };
    set(&mut args, "--listen", "127.0.0.1:0".into());
    set(&mut args, "--policy", policy_file.display().to_string());
    set(&mut args, "--state", format!("redis://127.0.0.1:{nowhere}"));
    let providers = policy_providers(&policy);
    for id in &providers {
        args.push("--base-url".into());
        args.push(format!("{id}=http://127.0.0.1:{nowhere}"));
    }
    args.extend(["--color".into(), "never".into()]);
    parse_serve(&args);

    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aigw"));
    cmd.args(&args)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AIGW_")) {
        cmd.env_remove(k);
    }
    let secret = example_secret_env();
    cmd.envs(&secret);
    for (k, _) in container_env(c) {
        cmd.env(k, format!("http://127.0.0.1:{nowhere}"));
    }
    for id in &providers {
        cmd.env(
            format!("AIGW_BASE_URL_{}", aigw::policy::secrets::env_word(id)),
            format!("http://127.0.0.1:{nowhere}"),
        );
    }
    let mut running = Running {
        child: cmd.spawn().unwrap(),
        stdout: out.clone(),
        stderr: err,
        _dir: dir,
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(rest) = text.split("serving on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        if let Some(status) = running.child.try_wait().unwrap() {
            panic!(
                "aigw serve exited ({status}) with the manifest's arguments\n{}",
                running.logs()
            );
        }
        assert!(
            Instant::now() < deadline,
            "aigw serve did not start with the manifest's arguments\n{}",
            running.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let token = secret.get("AIGW_AUTH_TOKEN").map(String::as_str);
    assert!(token.is_some());

    // Liveness: no token needed, and the link to the other replicas is reported (lost here).
    let (status, body) = get(&addr, "/healthz", None);
    assert_eq!(status, 200, "/healthz: {body}\n{}", running.logs());
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{body}");
    assert_eq!(
        health["state"]["connected"],
        Value::Bool(false),
        "/healthz reports the Redis link: {body}"
    );
    // Readiness: no token needed; no provider answers, so not ready.
    let (status, body) = get(&addr, "/readyz", None);
    assert_eq!(status, 503, "/readyz with every provider down: {body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], Value::Bool(false), "{body}");
    // /metrics is behind the token (the Prometheus scrape job must send it).
    let (status, _) = get(&addr, "/metrics", None);
    assert_eq!(status, 401, "/metrics without the token");
    let (status, body) = get(&addr, "/metrics", token);
    assert_eq!(status, 200);
    assert!(
        body.contains("aigw_state_"),
        "/metrics has the shared-state series:\n{body}"
    );

    // SIGTERM (what the kubelet sends after preStop) drains and exits 0 within --drain-timeout.
    let pid = running.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + serve.drain_timeout.0 + Duration::from_secs(5);
    let code = loop {
        if let Some(s) = running.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "aigw did not exit within --drain-timeout after SIGTERM\n{}",
            running.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        code.success(),
        "aigw exits 0 after a drain: {code}\n{}",
        running.logs()
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

/// The Dockerfile's instructions: (INSTRUCTION, rest), continuation lines joined and comment
/// lines dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("a Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (ins, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push((ins.to_ascii_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

/// The runtime stage's instructions (after the last FROM).
fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let last = all.iter().rposition(|(i, _)| i == "FROM").expect("a FROM");
    all[last..].to_vec()
}

fn dockerfile_user() -> String {
    runtime_stage()
        .into_iter()
        .rfind(|(i, _)| i == "USER")
        .map(|(_, u)| u)
        .expect("the runtime stage sets USER")
}

fn json_array(what: &str, rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("{what} is not in exec form (a JSON array): {rest} ({e})"))
}

#[test]
fn the_dockerfile_builds_locked_in_stages_runs_non_root_and_its_cmd_parses() {
    let ins = dockerfile();
    let froms: Vec<&String> = ins
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, r)| r)
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    let runtime = froms.last().unwrap().to_ascii_lowercase();
    // The binary links glibc and libgcc_s (a -gnu target): no empty or static-only runtime.
    assert!(
        !runtime.starts_with("scratch") && !runtime.contains("distroless/static"),
        "the runtime image lacks glibc: {runtime}"
    );
    assert!(
        ins.iter().any(|(i, r)| i == "RUN"
            && r.contains("cargo build")
            && r.contains("--release")
            && r.contains("--locked")),
        "the image is built with `cargo build --release --locked`"
    );

    let user = dockerfile_user();
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0" && uid.parse::<u32>().is_ok(),
        "a numeric non-root USER (runAsNonRoot can only check numbers): {user}"
    );

    let stage = runtime_stage();
    let entrypoint = stage
        .iter()
        .rfind(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, r)| json_array("ENTRYPOINT", r))
        .expect("ENTRYPOINT");
    assert_eq!(entrypoint, ["aigw"]);
    let cmd = stage
        .iter()
        .rfind(|(i, _)| i == "CMD")
        .map(|(_, r)| json_array("CMD", r))
        .expect("CMD");
    let serve = parse_serve(&cmd);
    let exposed: Vec<u16> = stage
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, r)| {
            r.split_whitespace()
                .map(|p| p.split('/').next().unwrap().parse().unwrap())
        })
        .collect();
    assert!(
        exposed.contains(&serve.listen.port()),
        "EXPOSE {exposed:?} includes the CMD's --listen port"
    );
    assert!(
        !serve.listen.ip().is_loopback(),
        "the CMD listens off loopback"
    );
    // The same policy path as the Kubernetes mount.
    let k8s = parse_serve(&strings(&gateway_container(gateway(&applied()))["args"]));
    assert_eq!(serve.policy.policy, k8s.policy.policy);
    assert_eq!(serve.listen.port(), k8s.listen.port());

    // The build context holds what the COPY instructions need, and not target/ or .git.
    let ignore: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .expect("a .dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect();
    for must in ["target", ".git"] {
        assert!(
            ignore.iter().any(|p| p == must),
            ".dockerignore leaves out {must}/"
        );
    }
    let mut copied = Vec::new();
    for (i, rest) in &ins {
        if i != "COPY" || rest.contains("--from") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(root().join(src).exists(), "COPY {src}: no such file");
            assert!(
                !ignore
                    .iter()
                    .any(|p| src == p || src.starts_with(&format!("{p}/"))),
                "COPY {src}, which .dockerignore leaves out"
            );
            copied.push(src.to_string());
        }
    }
    for need in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.iter().any(|c| c == need), "the build copies {need}");
    }
    // cargo refuses a manifest whose declared [[bench]] targets are missing.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    if manifest.contains("[[bench]]") {
        assert!(
            copied.iter().any(|c| c == "benches"),
            "Cargo.toml declares [[bench]] targets: the build must copy benches/"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// nginx directives as (name, arguments), comments dropped, blocks flattened.
fn nginx_directives(text: &str) -> Vec<(String, Vec<String>)> {
    let stripped: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    stripped
        .split([';', '{', '}'])
        .filter_map(|s| {
            let mut words = s
                .split_whitespace()
                .map(|w| w.trim_matches('"').to_string());
            let name = words.next()?;
            Some((name, words.collect()))
        })
        .collect()
}

/// nginx time (`10m`, `600s`, `600`) in seconds.
fn nginx_seconds(v: &str) -> u64 {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().unwrap();
    n * match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        other => panic!("unexpected nginx time unit {other}"),
    }
}

#[test]
fn the_nginx_conf_streams_keeps_connections_and_checks_replicas() {
    let path = root().join("deploy/nginx/aigw.conf");
    let text = std::fs::read_to_string(&path).expect("deploy/nginx/aigw.conf");
    let d = nginx_directives(&text);
    let one = |name: &str| -> Vec<String> {
        let found: Vec<&Vec<String>> = d
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(found.len(), 1, "one `{name}` directive");
        found[0].clone()
    };
    assert_eq!(one("proxy_buffering"), ["off"], "streams are not buffered");
    assert_eq!(one("proxy_http_version"), ["1.1"]);
    assert!(
        d.iter().any(|(n, a)| n == "proxy_set_header"
            && a.len() == 2
            && a[0] == "Connection"
            && a[1].is_empty()),
        "`proxy_set_header Connection \"\"` (upstream keep-alive)"
    );
    assert!(!one("keepalive").is_empty(), "upstream keepalive");
    let servers: Vec<&Vec<String>> = d
        .iter()
        .filter(|(n, _)| n == "server")
        .map(|(_, a)| a)
        .filter(|a| !a.is_empty())
        .collect();
    assert!(servers.len() >= 2, "several replicas in the upstream");
    for s in &servers {
        assert!(
            s.iter().any(|a| a.starts_with("max_fails=")),
            "passive health check (max_fails) on {s:?}"
        );
    }
    // Longer than aigw's default total_timeout (6m): a slow generation is not cut by nginx.
    assert!(nginx_seconds(&one("proxy_read_timeout")[0]) >= 360);
    // At least aigw's default --max-body-bytes (32 MiB).
    let body = one("client_max_body_size")[0].to_ascii_lowercase();
    let mib: u64 = body
        .trim_end_matches('m')
        .parse()
        .expect("client_max_body_size in m");
    assert!(
        body.ends_with('m') && mib >= 32,
        "client_max_body_size {body}"
    );

    let Some(nginx) =
        on_path("nginx").or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
    else {
        println!("note: nginx is not installed; `nginx -t` on deploy/nginx/aigw.conf skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    let main = dir.path().join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "pid nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path tmp/body;\n  proxy_temp_path tmp/proxy;\n  \
             fastcgi_temp_path tmp/fastcgi;\n  uwsgi_temp_path tmp/uwsgi;\n  \
             scgi_temp_path tmp/scgi;\n  include {};\n}}\n",
            path.display()
        ),
    )
    .unwrap();
    let out = Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .args(["-e", "stderr", "-c"])
        .arg(&main)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t refuses deploy/nginx/aigw.conf:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Tools, when installed
// ---------------------------------------------------------------------------------------------

#[test]
fn kustomize_and_kubeconform_accept_the_manifests_when_installed() {
    match on_path("kubectl") {
        Some(kubectl) => {
            // `kubectl kustomize` renders locally; it never talks to a cluster.
            let out = Command::new(kubectl)
                .arg("kustomize")
                .arg(k8s_dir())
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubectl kustomize deploy/kubernetes failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered: Vec<Value> =
                serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
            let mut kinds: Vec<&str> = rendered.iter().filter_map(|d| d["kind"].as_str()).collect();
            kinds.sort_unstable();
            let mut expected: Vec<String> =
                applied().iter().map(|d| d.kind().to_string()).collect();
            expected.sort_unstable();
            assert_eq!(kinds, expected, "kustomize renders what the test reads");
        }
        None => println!("note: kubectl is not installed; `kubectl kustomize` skipped"),
    }
    match on_path("kubeconform") {
        Some(kubeconform) => {
            let files: Vec<PathBuf> = kustomize_resources()
                .iter()
                .map(|r| k8s_dir().join(r))
                .chain([k8s_dir().join("secret.example.yaml")])
                .collect();
            let out = Command::new(kubeconform)
                .args(["-strict", "-summary", "-ignore-missing-schemas"])
                .args(&files)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "kubeconform refuses the manifests:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        None => println!("note: kubeconform is not installed; schema validation skipped"),
    }
}
