//! `aigw convert`: read another gateway's config, print the policy, report what did not fit.

use std::io::Write;
use std::path::Path;

use crate::cli::{ColorChoice, ConvertArgs};
use crate::commands::{Exit, common, validate};
use crate::convert::litellm;
use crate::policy::Severity;
use crate::policy::secrets::SecretStore;
use crate::render::diagnostics as render;

pub fn run(args: ConvertArgs, color: ColorChoice) -> Exit {
    let name = if args.file == Path::new("-") {
        "<stdin>".to_string()
    } else {
        args.file.display().to_string()
    };
    let text = match common::read_input(&args.file)
        .and_then(|b| String::from_utf8(b).map_err(|_| format!("{name} is not UTF-8 text")))
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "  help: pass LiteLLM's proxy config (the file given to `litellm --config`), e.g. `aigw convert config.yaml -o policy.yaml`"
            );
            return Exit::Error;
        }
    };
    let conversion = match litellm::convert(&name, &text) {
        Ok(c) => c,
        Err(e) => {
            match e.line {
                Some(l) => eprintln!("error: {name}:{l}: {}", e.message),
                None => eprintln!("error: {name}: {}", e.message),
            }
            eprintln!("  help: {}", e.help);
            return Exit::Error;
        }
    };
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
        return Exit::Failure;
    }

    match &args.output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &conversion.policy) {
                eprintln!("error: cannot write {}: {e}", path.display());
                return Exit::Error;
            }
            let model = conversion.example_model.as_deref().unwrap_or("MODEL");
            eprintln!(
                "wrote {0}; next: aigw validate {0} && aigw explain -p {0} --model {model}",
                path.display()
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth a message.
            let _ = stdout.write_all(conversion.policy.as_bytes());
        }
    }
    Exit::Success
}
