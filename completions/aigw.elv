
use builtin;
use str;

set edit:completion:arg-completer[aigw] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'aigw'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'aigw'= {
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand validate 'Check policy files: schema, meaning and CEL strategies, with located diagnostics'
            cand explain 'Dry-run routing: which strategy matches and the ordered candidates a request would try'
            cand test 'Run routing test files (request → expected candidates) against their policies'
            cand serve 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover'
            cand probe 'Check providers: reachability, installed models, pre-warm Ollama models'
            cand convert 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over'
            cand init 'Write the built-in default policy to a file to start from'
            cand schema 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aigw;validate'= {
            cand -p 'A policy file to check, as every other command takes it (same as a FILES argument)'
            cand --policy 'A policy file to check, as every other command takes it (same as a FILES argument)'
            cand --format 'Output format'
            cand --secrets 'Secrets file, to check that every `secrets.get` resolves'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand --deny-warnings 'Fail (exit 1) on warnings too'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'aigw;explain'= {
            cand -p 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --policy 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --base-url 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)'
            cand --secrets 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it'
            cand -m 'Requested model (`provider:model` or a bare name); repeat for a `models` list. Omit (or `ngrok/auto`) to let the strategies choose'
            cand --model 'Requested model (`provider:model` or a bare name); repeat for a `models` list. Omit (or `ngrok/auto`) to let the strategies choose'
            cand --path 'API path of the request'
            cand --method 'HTTP method of the request, for the policy''s rules'
            cand -H 'A request header, for the policy''s rules; repeat for more'
            cand --header 'A request header, for the policy''s rules; repeat for more'
            cand --client-ip 'The client''s IP address, for the policy''s rules (`conn.client_ip`, `restrict-ips`)'
            cand --fail 'Mark a provider (or provider:model) as failing to see where traffic would go next; `=ERROR` says how, and the table shows the failure''s class and what serve does next: down (the default), timeout, reset, a status such as 503 or 429, content_filter, context_length, unknown_model'
            cand --seed 'Seed for `random()` / `randomize()`, for a reproducible answer'
            cand --format 'Output format'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand --live 'Check every provider now (as serve does) and plan with what they answer: down boxes and boxes without the model are left out, installed models are routable, `m.aigw` is live'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'aigw;test'= {
            cand --format 'Output format'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'aigw;serve'= {
            cand -p 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --policy 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --base-url 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)'
            cand --secrets 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it'
            cand --listen 'Address to listen on. A non-loopback address requires --auth-token'
            cand --auth-token 'Token clients must send as `Authorization: Bearer TOKEN` (or AIGW_AUTH_TOKEN)'
            cand --max-attempts 'Most attempts per request across keys and models'
            cand --first-byte-timeout 'Fail over when an attempt''s first byte takes longer than this, streaming or not (a non-streaming answer''s first byte is the whole answer). Without it, a stream that has another model to go to gets 30s, and anything else only the policy''s timeouts'
            cand --cold-start-timeout 'First-byte budget of an Ollama model that was not loaded at the last health check (loading it comes first); raises a shorter first-byte limit'
            cand --stream-idle-timeout 'End a stream that sends nothing for this long'
            cand --rate-limit-retries 'After a 429 on a model''s last key: times to send it again (honouring Retry-After, else backing off with jitter) before failing over; 0 fails over at once'
            cand --same-pair-retries 'Times the same (key, model) is sent again after a transient failure (a 5xx, a reset) before the next candidate; 0 restores ngrok''s "never the same pair twice"'
            cand --max-retry-wait 'Longest wait accepted before a retry; a longer Retry-After fails over instead'
            cand --breaker-failures 'Consecutive failures (5xx, timeouts, connection errors) that open a model''s circuit; 0 turns circuit breaking off'
            cand --breaker-cooldown 'How long an open circuit skips its model before one request probes it again; each failed probe doubles the wait (up to 60s)'
            cand --max-body-bytes 'Largest request body accepted (bytes); larger ones get 413'
            cand --header-read-timeout 'Close connections that do not send a full request head (line and headers) within this time (slow clients, slow-loris)'
            cand --body-read-timeout 'A request body must arrive within this time once the gateway starts reading it, else 408 and the connection is closed (stalled or trickled bodies)'
            cand --workers 'Threads serving connections; 0 means one per core. A connection and the upstream connections its requests use stay on one thread'
            cand --max-connections 'Most client connections served at once; more wait in the listen backlog until one closes. 0: half the open-file limit (each proxied request also holds an upstream socket)'
            cand --health-interval 'How often each provider is health-checked (`/api/version`, `/api/tags`, `/api/ps`); a box that does not answer is checked again after a backoff doubling up to 60s'
            cand --max-in-flight 'Most requests in flight to provider ID at once (repeatable: `--max-in-flight gpu-a=1`); more wait in a first-in-first-out queue. For an Ollama box, its OLLAMA_NUM_PARALLEL'
            cand --queue-depth 'Most requests waiting per limited provider; past it, 429 with Retry-After'
            cand --queue-timeout 'Longest a request waits in the queue before 429 with Retry-After'
            cand --keep-warm 'Keep the policy''s models loaded on each Ollama box that has them: a load-only request with this `keep_alive` every half of it, never while a real request runs on the model'
            cand --drain-timeout 'On SIGTERM (or Ctrl-C): `/readyz` answers 503, new connections are refused, and requests and streams in flight get this long to finish; then what is still open ends with an error event and the process exits 0. Keep it below Kubernetes'' terminationGracePeriodSeconds'
            cand --state 'Share circuit breakers, box health, rate-limit windows and `m.metrics` figures with other replicas through Redis: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…` (a password can come from AIGW_STATE_PASSWORD instead). Off: each process learns alone'
            cand --log-format 'Log format for request logs'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand --no-stream-continuation 'Do not continue a chat stream that fails midway (cut, stalled, closed unfinished) on the plan''s next candidate: end it with an error event instead'
            cand --no-reload 'Do not watch the policy file for changes'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'aigw;probe'= {
            cand -p 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --policy 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy'
            cand --base-url 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)'
            cand --secrets 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(''vault'', ''name'')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it'
            cand --keep-alive 'keep_alive sent with the pre-warm request (`-1` keeps the model loaded)'
            cand --timeout 'Timeout for each check (a pre-warm waits at least 5m, Ollama''s own load limit)'
            cand --format 'Output format'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand --warm 'Pre-warm each policy model on Ollama providers (default)'
            cand --no-warm 'Skip pre-warming'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'aigw;convert'= {
            cand -o 'Write the policy to this file instead of standard output'
            cand --output 'Write the policy to this file instead of standard output'
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'aigw;init'= {
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand --force 'Overwrite an existing file'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'aigw;schema'= {
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'aigw;completions'= {
            cand --color 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'aigw;help'= {
            cand validate 'Check policy files: schema, meaning and CEL strategies, with located diagnostics'
            cand explain 'Dry-run routing: which strategy matches and the ordered candidates a request would try'
            cand test 'Run routing test files (request → expected candidates) against their policies'
            cand serve 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover'
            cand probe 'Check providers: reachability, installed models, pre-warm Ollama models'
            cand convert 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over'
            cand init 'Write the built-in default policy to a file to start from'
            cand schema 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)'
            cand completions 'Print a shell completion script'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'aigw;help;validate'= {
        }
        &'aigw;help;explain'= {
        }
        &'aigw;help;test'= {
        }
        &'aigw;help;serve'= {
        }
        &'aigw;help;probe'= {
        }
        &'aigw;help;convert'= {
        }
        &'aigw;help;init'= {
        }
        &'aigw;help;schema'= {
        }
        &'aigw;help;completions'= {
        }
        &'aigw;help;help'= {
        }
    ]
    $completions[$command]
}
