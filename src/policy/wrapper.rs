//! Files people already have around a policy: an ngrok agent config (`version: 3`,
//! `endpoints[].traffic_policy`) and a Kubernetes `CloudEndpoint` / `AgentEndpoint`
//! (`spec.trafficPolicy.policy`). The policy inside is read in place, so every diagnostic
//! still points into the file as written.

use super::diagnostic::{Code, Diagnostic};
use super::node::Node;

/// The policy node inside `root` when it is a wrapper file, with a note saying which policy
/// was taken; `None` when `root` is not a wrapper (a plain policy). `Err` when it is a wrapper
/// without a policy.
pub fn unwrap(root: &Node) -> Option<Result<(&Node, Option<Diagnostic>), Diagnostic>> {
    if let Some(kind) = root.get("kind").and_then(Node::as_str)
        && matches!(kind, "CloudEndpoint" | "AgentEndpoint")
    {
        let policy = root
            .get("spec")
            .and_then(|s| s.get("trafficPolicy"))
            .and_then(|t| t.get("policy"));
        return Some(match policy {
            Some(p) => Ok((p, None)),
            None => Err(Diagnostic::new(
                Code::NotAPolicy,
                root.span.clone(),
                format!("this {kind} has no `spec.trafficPolicy.policy`"),
            )
            .help("aigw reads the inline policy under `spec.trafficPolicy.policy`; a `targetRef` to a separate resource cannot be followed")),
        });
    }
    let endpoints = root.get("endpoints")?.as_seq()?;
    root.get("version")?;
    let with_policy: Vec<&Node> = endpoints
        .iter()
        .filter(|e| e.get("traffic_policy").is_some())
        .collect();
    let Some(first) = with_policy.first() else {
        return Some(Err(Diagnostic::new(
            Code::NotAPolicy,
            root.span.clone(),
            "this ngrok agent config has no endpoint with a `traffic_policy`",
        )
        .help(
            "add `traffic_policy:` to an endpoint, or point aigw at the policy file itself",
        )));
    };
    let policy = first.get("traffic_policy")?;
    let note = (with_policy.len() > 1).then(|| {
        let name = endpoint_name(first);
        Diagnostic::new(
            Code::SeveralEndpoints,
            first.span.clone(),
            format!(
                "this agent config has {} endpoints with a traffic policy; aigw uses the first, {name}",
                with_policy.len()
            ),
        )
        .label("this endpoint's policy")
        .help("keep one endpoint per file, or put the policy you want first")
    });
    Some(Ok((policy, note)))
}

fn endpoint_name(e: &Node) -> String {
    ["name", "url"]
        .iter()
        .find_map(|k| e.get(k).and_then(Node::as_str))
        .map_or_else(|| "the first one".to_owned(), |n| format!("`{n}`"))
}

#[cfg(test)]
mod tests {
    use crate::policy::{Code, PhaseKind, load_str};

    #[test]
    fn an_agent_config_is_read_as_its_endpoints_policy() {
        let text = "version: 3\nagent:\n  authtoken: x\nendpoints:\n  - name: ai\n    url: https://ai.ngrok.app\n    traffic_policy:\n      on_http_request:\n        - actions:\n            - type: ai-gateway\n";
        let l = load_str("ngrok.yml", text);
        assert!(l.diagnostics.is_empty(), "{:?}", l.diagnostics);
        let p = l.policy.unwrap();
        assert_eq!(p.phases[0].kind, PhaseKind::OnHttpRequest);
        assert_eq!(p.ai_gateways().count(), 1);
    }

    #[test]
    fn a_kubernetes_cloud_endpoint_is_read_and_errors_point_into_the_file() {
        let text = "apiVersion: ngrok.k8s.ngrok.com/v1alpha1\nkind: CloudEndpoint\nmetadata:\n  name: ai\nspec:\n  url: https://ai.ngrok.app\n  trafficPolicy:\n    policy:\n      on_http_request:\n        - actions:\n            - type: ai-gatewai\n";
        let l = load_str("ep.yaml", text);
        let d = &l.diagnostics[0];
        assert_eq!(d.code, Code::UnknownAction);
        assert_eq!(&text[d.span.clone().unwrap()], "ai-gatewai");
    }

    #[test]
    fn a_wrapper_without_a_policy_says_so() {
        let l = load_str("ep.yaml", "kind: AgentEndpoint\nspec:\n  url: tcp://x\n");
        assert!(l.policy.is_none());
        assert!(
            l.diagnostics[0]
                .message
                .contains("spec.trafficPolicy.policy")
        );
        let l = load_str("ngrok.yml", "version: 3\nendpoints:\n  - url: https://x\n");
        assert!(
            l.diagnostics[0]
                .message
                .contains("no endpoint with a `traffic_policy`")
        );
    }
}
