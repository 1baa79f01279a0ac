//! Diagnostics: what `validate` reports, with a stable code, a span, a message and a fix.

use super::node::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Every check aigw makes, with its stable code. Codes never change meaning once released;
/// retired checks keep their number unused (E037 and W013 are reserved: checks of `${…}` roots
/// and provider names in strategies are not written yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    YamlSyntax,
    NotAPolicy,
    UnknownPhase,
    WrongType,
    UnknownField,
    MissingField,
    UnknownAction,
    ActionWrongPhase,
    RuleShape,
    RuleWithoutActions,
    BadDuration,
    TokenLimit,
    OnErrorValue,
    DuplicateProvider,
    DuplicateModel,
    ModelAliasCollision,
    CustomProviderNoBaseUrl,
    InsecureBaseUrl,
    InvalidBaseUrl,
    MultipleAiGateways,
    CelSyntax,
    CelUnknownVariable,
    CelUnknownField,
    CelUnknownFunction,
    CelArity,
    CelPriceType,
    CelResultType,
    CelWrongRoot,
    OnlyConfiguredModelsWithoutModels,
    OnlyConfiguredProvidersWithoutProviders,
    ApiFormat,
    SupportedParamsWithoutSurface,
    UnknownSurface,
    StrategyNotAList,
    InterpolationSyntax,
    SecretsGetArity,
    EmptyValue,
    InvalidProviderId,
    LegacyPhase,
    UnresolvedSecret,
    NoCatchAllStrategy,
    DeprecatedKeySelection,
    SecretsGetOneArgument,
    TimeoutOrder,
    LoopbackHttp,
    CustomProviderNoModels,
    UnreachableAction,
    UnreachableStrategy,
    NotInterpolated,
    AllProvidersDisabled,
    CelUnguardedKey,
    PolicyExpression,
    ActionConfig,
    NotRunLocally,
    InvalidCidr,
    NoAiGateway,
    ActionSkipped,
    SeveralEndpoints,
    CelComparisonType,
}

impl Code {
    /// The stable identifier shown to users and in JSON.
    pub fn id(self) -> &'static str {
        use Code::*;
        match self {
            YamlSyntax => "AIGW-E001",
            NotAPolicy => "AIGW-E002",
            UnknownPhase => "AIGW-E003",
            WrongType => "AIGW-E004",
            UnknownField => "AIGW-E005",
            MissingField => "AIGW-E006",
            UnknownAction => "AIGW-E007",
            ActionWrongPhase => "AIGW-E008",
            RuleShape => "AIGW-E009",
            RuleWithoutActions => "AIGW-E010",
            BadDuration => "AIGW-E011",
            TokenLimit => "AIGW-E012",
            OnErrorValue => "AIGW-E013",
            DuplicateProvider => "AIGW-E014",
            DuplicateModel => "AIGW-E015",
            ModelAliasCollision => "AIGW-E016",
            CustomProviderNoBaseUrl => "AIGW-E017",
            InsecureBaseUrl => "AIGW-E018",
            InvalidBaseUrl => "AIGW-E019",
            MultipleAiGateways => "AIGW-E020",
            CelSyntax => "AIGW-E021",
            CelUnknownVariable => "AIGW-E022",
            CelUnknownField => "AIGW-E023",
            CelUnknownFunction => "AIGW-E024",
            CelArity => "AIGW-E025",
            CelPriceType => "AIGW-E026",
            CelResultType => "AIGW-E027",
            CelWrongRoot => "AIGW-E028",
            OnlyConfiguredModelsWithoutModels => "AIGW-E029",
            OnlyConfiguredProvidersWithoutProviders => "AIGW-E030",
            ApiFormat => "AIGW-E031",
            SupportedParamsWithoutSurface => "AIGW-E032",
            UnknownSurface => "AIGW-E033",
            StrategyNotAList => "AIGW-E034",
            InterpolationSyntax => "AIGW-E035",
            SecretsGetArity => "AIGW-E036",
            EmptyValue => "AIGW-E038",
            InvalidProviderId => "AIGW-E039",
            LegacyPhase => "AIGW-W001",
            UnresolvedSecret => "AIGW-W002",
            NoCatchAllStrategy => "AIGW-W003",
            DeprecatedKeySelection => "AIGW-W004",
            SecretsGetOneArgument => "AIGW-W005",
            TimeoutOrder => "AIGW-W006",
            LoopbackHttp => "AIGW-W007",
            CustomProviderNoModels => "AIGW-W008",
            UnreachableAction => "AIGW-W009",
            UnreachableStrategy => "AIGW-W010",
            NotInterpolated => "AIGW-W011",
            AllProvidersDisabled => "AIGW-W012",
            CelUnguardedKey => "AIGW-W014",
            PolicyExpression => "AIGW-E040",
            ActionConfig => "AIGW-E041",
            NotRunLocally => "AIGW-E042",
            InvalidCidr => "AIGW-E043",
            NoAiGateway => "AIGW-W015",
            ActionSkipped => "AIGW-W016",
            SeveralEndpoints => "AIGW-W017",
            CelComparisonType => "AIGW-E044",
        }
    }

    /// The severity a check reports at (warnings become errors with `--deny-warnings`).
    pub fn severity(self) -> Severity {
        if self.id().starts_with("AIGW-W") {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    /// The ngrok error code for the same fault, where ngrok defines one.
    pub fn ngrok(self) -> Option<&'static str> {
        use Code::*;
        match self {
            UnknownAction => Some("ERR_NGROK_2201"),
            ActionWrongPhase => Some("ERR_NGROK_2202"),
            RuleWithoutActions => Some("ERR_NGROK_2206"),
            UnreachableAction => Some("ERR_NGROK_2207"),
            MultipleAiGateways => Some("ERR_NGROK_2266"),
            DeprecatedKeySelection => Some("ERR_NGROK_2267"),
            CelResultType => Some("ERR_NGROK_3806"),
            InterpolationSyntax | SecretsGetArity => Some("ERR_NGROK_2224"),
            PolicyExpression => Some("ERR_NGROK_2200"),
            ActionConfig => Some("ERR_NGROK_2204"),
            InvalidCidr => Some("ERR_NGROK_2217"),
            _ => None,
        }
    }
}

/// One finding, located in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    /// Short text under the underline.
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
    /// Other places that explain this one ("first defined here").
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(code: Code, span: impl Into<Option<Span>>, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            span: span.into(),
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// Points at a second place in the file with its own label.
    pub fn also(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// "did you mean `x`?" for a misspelt name, when one candidate is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
