
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'aigw' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'aigw'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'aigw' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check policy files: schema, meaning and CEL strategies, with located diagnostics')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Dry-run routing: which strategy matches and the ordered candidates a request would try')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Run routing test files (request → expected candidates) against their policies')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover')
            [CompletionResult]::new('probe', 'probe', [CompletionResultType]::ParameterValue, 'Check providers: reachability, installed models, pre-warm Ollama models')
            [CompletionResult]::new('convert', 'convert', [CompletionResultType]::ParameterValue, 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Write the built-in default policy to a file to start from')
            [CompletionResult]::new('schema', 'schema', [CompletionResultType]::ParameterValue, 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aigw;validate' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'A policy file to check, as every other command takes it (same as a FILES argument)')
            [CompletionResult]::new('--policy', '--policy', [CompletionResultType]::ParameterName, 'A policy file to check, as every other command takes it (same as a FILES argument)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--secrets', '--secrets', [CompletionResultType]::ParameterName, 'Secrets file, to check that every `secrets.get` resolves')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('--deny-warnings', '--deny-warnings', [CompletionResultType]::ParameterName, 'Fail (exit 1) on warnings too')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'aigw;explain' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--policy', '--policy', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--base-url', '--base-url', [CompletionResultType]::ParameterName, 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)')
            [CompletionResult]::new('--secrets', '--secrets', [CompletionResultType]::ParameterName, 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it')
            [CompletionResult]::new('-m', '-m', [CompletionResultType]::ParameterName, 'Requested model (`provider:model` or a bare name); repeat for a `models` list. Omit (or `ngrok/auto`) to let the strategies choose')
            [CompletionResult]::new('--model', '--model', [CompletionResultType]::ParameterName, 'Requested model (`provider:model` or a bare name); repeat for a `models` list. Omit (or `ngrok/auto`) to let the strategies choose')
            [CompletionResult]::new('--path', '--path', [CompletionResultType]::ParameterName, 'API path of the request')
            [CompletionResult]::new('--method', '--method', [CompletionResultType]::ParameterName, 'HTTP method of the request, for the policy''s rules')
            [CompletionResult]::new('-H', '-H ', [CompletionResultType]::ParameterName, 'A request header, for the policy''s rules; repeat for more')
            [CompletionResult]::new('--header', '--header', [CompletionResultType]::ParameterName, 'A request header, for the policy''s rules; repeat for more')
            [CompletionResult]::new('--client-ip', '--client-ip', [CompletionResultType]::ParameterName, 'The client''s IP address, for the policy''s rules (`conn.client_ip`, `restrict-ips`)')
            [CompletionResult]::new('--fail', '--fail', [CompletionResultType]::ParameterName, 'Mark a provider (or provider:model) as failing to see where traffic would go next; `=ERROR` says how, and the table shows the failure''s class and what serve does next: down (the default), timeout, reset, a status such as 503 or 429, content_filter, context_length, unknown_model')
            [CompletionResult]::new('--seed', '--seed', [CompletionResultType]::ParameterName, 'Seed for `random()` / `randomize()`, for a reproducible answer')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('--live', '--live', [CompletionResultType]::ParameterName, 'Check every provider now (as serve does) and plan with what they answer: down boxes and boxes without the model are left out, installed models are routable, `m.aigw` is live')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'aigw;test' {
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'aigw;serve' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--policy', '--policy', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--base-url', '--base-url', [CompletionResultType]::ParameterName, 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)')
            [CompletionResult]::new('--secrets', '--secrets', [CompletionResultType]::ParameterName, 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it')
            [CompletionResult]::new('--listen', '--listen', [CompletionResultType]::ParameterName, 'Address to listen on. A non-loopback address requires --auth-token')
            [CompletionResult]::new('--auth-token', '--auth-token', [CompletionResultType]::ParameterName, 'Token clients must send as `Authorization: Bearer TOKEN` (or AIGW_AUTH_TOKEN)')
            [CompletionResult]::new('--max-attempts', '--max-attempts', [CompletionResultType]::ParameterName, 'Most attempts per request across keys and models')
            [CompletionResult]::new('--first-byte-timeout', '--first-byte-timeout', [CompletionResultType]::ParameterName, 'Fail over when an attempt''s first byte takes longer than this, streaming or not (a non-streaming answer''s first byte is the whole answer). Without it, a stream that has another model to go to gets 30s, and anything else only the policy''s timeouts')
            [CompletionResult]::new('--cold-start-timeout', '--cold-start-timeout', [CompletionResultType]::ParameterName, 'First-byte budget of an Ollama model that was not loaded at the last health check (loading it comes first); raises a shorter first-byte limit')
            [CompletionResult]::new('--stream-idle-timeout', '--stream-idle-timeout', [CompletionResultType]::ParameterName, 'End a stream that sends nothing for this long')
            [CompletionResult]::new('--rate-limit-retries', '--rate-limit-retries', [CompletionResultType]::ParameterName, 'After a 429 on a model''s last key: times to send it again (honouring Retry-After, else backing off with jitter) before failing over; 0 fails over at once')
            [CompletionResult]::new('--same-pair-retries', '--same-pair-retries', [CompletionResultType]::ParameterName, 'Times the same (key, model) is sent again after a transient failure (a 5xx, a reset) before the next candidate; 0 restores ngrok''s "never the same pair twice"')
            [CompletionResult]::new('--max-retry-wait', '--max-retry-wait', [CompletionResultType]::ParameterName, 'Longest wait accepted before a retry; a longer Retry-After fails over instead')
            [CompletionResult]::new('--breaker-failures', '--breaker-failures', [CompletionResultType]::ParameterName, 'Consecutive failures (5xx, timeouts, connection errors) that open a model''s circuit; 0 turns circuit breaking off')
            [CompletionResult]::new('--breaker-cooldown', '--breaker-cooldown', [CompletionResultType]::ParameterName, 'How long an open circuit skips its model before one request probes it again; each failed probe doubles the wait (up to 60s)')
            [CompletionResult]::new('--max-body-bytes', '--max-body-bytes', [CompletionResultType]::ParameterName, 'Largest request body accepted (bytes); larger ones get 413')
            [CompletionResult]::new('--header-read-timeout', '--header-read-timeout', [CompletionResultType]::ParameterName, 'Close connections that do not send a full request head (line and headers) within this time (slow clients, slow-loris)')
            [CompletionResult]::new('--body-read-timeout', '--body-read-timeout', [CompletionResultType]::ParameterName, 'A request body must arrive within this time once the gateway starts reading it, else 408 and the connection is closed (stalled or trickled bodies)')
            [CompletionResult]::new('--workers', '--workers', [CompletionResultType]::ParameterName, 'Threads serving connections; 0 means one per core. A connection and the upstream connections its requests use stay on one thread')
            [CompletionResult]::new('--max-connections', '--max-connections', [CompletionResultType]::ParameterName, 'Most client connections served at once; more wait in the listen backlog until one closes. 0: half the open-file limit (each proxied request also holds an upstream socket)')
            [CompletionResult]::new('--health-interval', '--health-interval', [CompletionResultType]::ParameterName, 'How often each provider is health-checked (`/api/version`, `/api/tags`, `/api/ps`); a box that does not answer is checked again after a backoff doubling up to 60s')
            [CompletionResult]::new('--max-in-flight', '--max-in-flight', [CompletionResultType]::ParameterName, 'Most requests in flight to provider ID at once (repeatable: `--max-in-flight gpu-a=1`); more wait in a first-in-first-out queue. For an Ollama box, its OLLAMA_NUM_PARALLEL')
            [CompletionResult]::new('--queue-depth', '--queue-depth', [CompletionResultType]::ParameterName, 'Most requests waiting per limited provider; past it, 429 with Retry-After')
            [CompletionResult]::new('--queue-timeout', '--queue-timeout', [CompletionResultType]::ParameterName, 'Longest a request waits in the queue before 429 with Retry-After')
            [CompletionResult]::new('--keep-warm', '--keep-warm', [CompletionResultType]::ParameterName, 'Keep the policy''s models loaded on each Ollama box that has them: a load-only request with this `keep_alive` every half of it, never while a real request runs on the model')
            [CompletionResult]::new('--drain-timeout', '--drain-timeout', [CompletionResultType]::ParameterName, 'On SIGTERM (or Ctrl-C): `/readyz` answers 503, new connections are refused, and requests and streams in flight get this long to finish; then what is still open ends with an error event and the process exits 0. Keep it below Kubernetes'' terminationGracePeriodSeconds')
            [CompletionResult]::new('--state', '--state', [CompletionResultType]::ParameterName, 'Share circuit breakers, box health, rate-limit windows and `m.metrics` figures with other replicas through Redis: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…` (a password can come from AIGW_STATE_PASSWORD instead). Off: each process learns alone')
            [CompletionResult]::new('--log-format', '--log-format', [CompletionResultType]::ParameterName, 'Log format for request logs')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('--no-stream-continuation', '--no-stream-continuation', [CompletionResultType]::ParameterName, 'Do not continue a chat stream that fails midway (cut, stalled, closed unfinished) on the plan''s next candidate: end it with an error event instead')
            [CompletionResult]::new('--no-reload', '--no-reload', [CompletionResultType]::ParameterName, 'Do not watch the policy file for changes')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'aigw;probe' {
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--policy', '--policy', [CompletionResultType]::ParameterName, 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy')
            [CompletionResult]::new('--base-url', '--base-url', [CompletionResultType]::ParameterName, 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)')
            [CompletionResult]::new('--secrets', '--secrets', [CompletionResultType]::ParameterName, 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it')
            [CompletionResult]::new('--keep-alive', '--keep-alive', [CompletionResultType]::ParameterName, 'keep_alive sent with the pre-warm request (`-1` keeps the model loaded)')
            [CompletionResult]::new('--timeout', '--timeout', [CompletionResultType]::ParameterName, 'Timeout for each check (a pre-warm waits at least 5m, Ollama''s own load limit)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('--warm', '--warm', [CompletionResultType]::ParameterName, 'Pre-warm each policy model on Ollama providers (default)')
            [CompletionResult]::new('--no-warm', '--no-warm', [CompletionResultType]::ParameterName, 'Skip pre-warming')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'aigw;convert' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the policy to this file instead of standard output')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the policy to this file instead of standard output')
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'aigw;init' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('--force', '--force', [CompletionResultType]::ParameterName, 'Overwrite an existing file')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'aigw;schema' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'aigw;completions' {
            [CompletionResult]::new('--color', '--color', [CompletionResultType]::ParameterName, 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'aigw;help' {
            [CompletionResult]::new('validate', 'validate', [CompletionResultType]::ParameterValue, 'Check policy files: schema, meaning and CEL strategies, with located diagnostics')
            [CompletionResult]::new('explain', 'explain', [CompletionResultType]::ParameterValue, 'Dry-run routing: which strategy matches and the ordered candidates a request would try')
            [CompletionResult]::new('test', 'test', [CompletionResultType]::ParameterValue, 'Run routing test files (request → expected candidates) against their policies')
            [CompletionResult]::new('serve', 'serve', [CompletionResultType]::ParameterValue, 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover')
            [CompletionResult]::new('probe', 'probe', [CompletionResultType]::ParameterValue, 'Check providers: reachability, installed models, pre-warm Ollama models')
            [CompletionResult]::new('convert', 'convert', [CompletionResultType]::ParameterValue, 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Write the built-in default policy to a file to start from')
            [CompletionResult]::new('schema', 'schema', [CompletionResultType]::ParameterValue, 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'aigw;help;validate' {
            break
        }
        'aigw;help;explain' {
            break
        }
        'aigw;help;test' {
            break
        }
        'aigw;help;serve' {
            break
        }
        'aigw;help;probe' {
            break
        }
        'aigw;help;convert' {
            break
        }
        'aigw;help;init' {
            break
        }
        'aigw;help;schema' {
            break
        }
        'aigw;help;completions' {
            break
        }
        'aigw;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
