//! ngrok's built-in providers and their known models (`catalog.json`, from the docs snapshot).

use std::sync::OnceLock;

use serde::Deserialize;

use crate::policy::ApiFormat;
use crate::policy::checks::BuiltinProviders;

#[derive(Debug, Clone, Deserialize)]
pub struct BuiltinProvider {
    pub id: String,
    #[serde(default)]
    pub id_aliases: Vec<String>,
    pub display_name: Option<String>,
    /// `None` where ngrok never documented it (inceptionlabs).
    pub base_url: Option<String>,
    pub formats: Vec<ApiFormatName>,
    /// API surfaces served, where documented; `None` means all of its formats' surfaces.
    pub surfaces: Option<Vec<String>>,
    pub website: Option<String>,
    pub key_prefix: Option<String>,
    pub notes: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApiFormatName {
    Openai,
    Anthropic,
}

impl From<ApiFormatName> for ApiFormat {
    fn from(f: ApiFormatName) -> Self {
        match f {
            ApiFormatName::Openai => ApiFormat::OpenAi,
            ApiFormatName::Anthropic => ApiFormat::Anthropic,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Author {
    pub id: String,
    #[serde(default)]
    pub id_aliases: Vec<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CatalogModel {
    pub provider_id: String,
    pub id: String,
    #[serde(default)]
    pub id_aliases: Vec<String>,
    pub author_id: Option<String>,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub max_context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub input_modalities: Option<Vec<String>>,
    #[serde(default)]
    pub output_modalities: Option<Vec<String>>,
    #[serde(default)]
    pub supported_features: Option<Vec<String>>,
    #[serde(default)]
    pub pricing: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct Catalog {
    pub providers: Vec<BuiltinProvider>,
    pub authors: Vec<Author>,
    pub models: Vec<CatalogModel>,
}

impl Catalog {
    /// The catalog compiled into aigw.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            serde_json::from_str(include_str!("catalog.json"))
                .expect("catalog.json is checked by a unit test")
        })
    }

    /// A built-in provider by id or alias, case-insensitive.
    pub fn provider(&self, name: &str) -> Option<&BuiltinProvider> {
        self.providers.iter().find(|p| {
            p.id.eq_ignore_ascii_case(name)
                || p.id_aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
    }

    pub fn models_of<'a>(
        &'a self,
        provider_id: &'a str,
    ) -> impl Iterator<Item = &'a CatalogModel> + 'a {
        self.models
            .iter()
            .filter(move |m| m.provider_id == provider_id)
    }
}

impl BuiltinProviders for Catalog {
    fn builtin_id(&self, name: &str) -> Option<&str> {
        self.provider(name).map(|p| p.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_parses_and_is_consistent() {
        let c = Catalog::builtin();
        assert!(c.providers.len() >= 9);
        for m in &c.models {
            assert!(
                c.provider(&m.provider_id).is_some(),
                "{} has unknown provider",
                m.id
            );
        }
        assert_eq!(c.provider("OpenAI").unwrap().id, "openai");
        assert_eq!(c.provider("inference.net").unwrap().id, "inference-net");
        assert!(c.models_of("openai").any(|m| m.id == "gpt-4o"));
    }
}
