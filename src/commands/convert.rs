//! `aigw convert`: read another gateway's config, print the policy, report what did not fit.

use std::io::Write;
use std::path::Path;

use crate::cli::{ColorChoice, ConvertArgs};
use crate::commands::{CommandError, Exit, common, validate};
use crate::convert::litellm;
use crate::policy::Severity;
use crate::policy::secrets::SecretStore;
use crate::render::diagnostics as render;

pub fn run(args: ConvertArgs, color: ColorChoice) -> Result<Exit, CommandError> {
    let name = if args.file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let bytes = common::read_input(&args.file).map_err(CommandError::ConvertRead)?;
    let text = String::from_utf8(bytes).map_err(|_| CommandError::ConvertNotUtf8(name.clone()))?;
    let conversion = litellm::convert(&name, &text).map_err(|error| CommandError::Convert {
        file: name.clone(),
        error,
    })?;
    eprint!("{}", conversion.report(&name));

    // The output must be a policy `validate` accepts; anything else is a bug in convert.
    let out_name = args
        .output
        .as_ref()
        .map_or("<converted policy>".to_string(), |p| {
            p.display().to_string()
        });
    let (source, diags) = validate::check_text(
        &out_name,
        conversion.policy.as_bytes(),
        &SecretStore::default(),
    );
    if diags.iter().any(|d| d.severity == Severity::Error) {
        let style = common::style(color, false);
        let errors: Vec<_> = diags
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        eprint!("{}", render::human_all(&errors, &source, style));
        eprintln!(
            "error: the converted policy does not validate (a bug in `aigw convert`; please report it with the config)"
        );
        return Ok(Exit::Failure);
    }

    match &args.output {
        Some(path) => {
            std::fs::write(path, &conversion.policy).map_err(|source| CommandError::Write {
                path: path.clone(),
                source,
            })?;
            let model = conversion.example_model.as_deref().unwrap_or("MODEL");
            eprintln!(
                "wrote {0}; next: aigw validate {0} && aigw explain -p {0} --model {model}",
                path.display()
            );
        }
        None => std::io::stdout()
            .lock()
            .write_all(conversion.policy.as_bytes())?,
    }
    Ok(Exit::Success)
}
