# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_aigw_global_optspecs
    string join \n color= h/help V/version
end

function __fish_aigw_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_aigw_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_aigw_using_subcommand
    set -l cmd (__fish_aigw_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c aigw -n "__fish_aigw_needs_command" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aigw -n "__fish_aigw_needs_command" -s V -l version -d 'Print version'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "validate" -d 'Check policy files: schema, meaning and CEL strategies, with located diagnostics'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "explain" -d 'Dry-run routing: which strategy matches and the ordered candidates a request would try'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "test" -d 'Run routing test files (request → expected candidates) against their policies'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "serve" -d 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "probe" -d 'Check providers: reachability, installed models, pre-warm Ollama models'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "convert" -d 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "init" -d 'Write the built-in default policy to a file to start from'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "schema" -d 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c aigw -n "__fish_aigw_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c aigw -n "__fish_aigw_using_subcommand validate" -s p -l policy -d 'A policy file to check, as every other command takes it (same as a FILES argument)' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand validate" -l format -d 'Output format' -r -f -a "human\t'Diagnostics with source snippets'
json\t'One JSON object per file'
github\t'GitHub Actions workflow annotations'"
complete -c aigw -n "__fish_aigw_using_subcommand validate" -l secrets -d 'Secrets file, to check that every `secrets.get` resolves' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand validate" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand validate" -l deny-warnings -d 'Fail (exit 1) on warnings too'
complete -c aigw -n "__fish_aigw_using_subcommand validate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aigw -n "__fish_aigw_using_subcommand explain" -s p -l policy -d 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l base-url -d 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l secrets -d 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(\'vault\', \'name\')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand explain" -s m -l model -d 'Requested model (`provider:model` or a bare name); repeat for a `models` list. Omit (or `ngrok/auto`) to let the strategies choose' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l path -d 'API path of the request' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l method -d 'HTTP method of the request, for the policy\'s rules' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -s H -l header -d 'A request header, for the policy\'s rules; repeat for more' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l client-ip -d 'The client\'s IP address, for the policy\'s rules (`conn.client_ip`, `restrict-ips`)' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l fail -d 'Mark a provider (or provider:model) as failing to see where traffic would go next; `=ERROR` says how, and the table shows the failure\'s class and what serve does next: down (the default), timeout, reset, a status such as 503 or 429, content_filter, context_length, unknown_model' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l seed -d 'Seed for `random()` / `randomize()`, for a reproducible answer' -r
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l format -d 'Output format' -r -f -a "table\t'Text for people'
json\t'JSON for scripts'"
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand explain" -l live -d 'Check every provider now (as serve does) and plan with what they answer: down boxes and boxes without the model are left out, installed models are routable, `m.aigw` is live'
complete -c aigw -n "__fish_aigw_using_subcommand explain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aigw -n "__fish_aigw_using_subcommand test" -l format -d 'Output format' -r -f -a "table\t'Text for people'
json\t'JSON for scripts'"
complete -c aigw -n "__fish_aigw_using_subcommand test" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand test" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aigw -n "__fish_aigw_using_subcommand serve" -s p -l policy -d 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l base-url -d 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l secrets -d 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(\'vault\', \'name\')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l listen -d 'Address to listen on. A non-loopback address requires --auth-token' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l auth-token -d 'Token clients must send as `Authorization: Bearer TOKEN` (or AIGW_AUTH_TOKEN)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l max-attempts -d 'Most attempts per request across keys and models' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l first-byte-timeout -d 'Fail over when an attempt\'s first byte takes longer than this, streaming or not (a non-streaming answer\'s first byte is the whole answer). Without it, a stream that has another model to go to gets 30s, and anything else only the policy\'s timeouts' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l cold-start-timeout -d 'First-byte budget of an Ollama model that was not loaded at the last health check (loading it comes first); raises a shorter first-byte limit' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l stream-idle-timeout -d 'End a stream that sends nothing for this long' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l rate-limit-retries -d 'After a 429 on a model\'s last key: times to send it again (honouring Retry-After, else backing off with jitter) before failing over; 0 fails over at once' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l same-pair-retries -d 'Times the same (key, model) is sent again after a transient failure (a 5xx, a reset) before the next candidate; 0 restores ngrok\'s "never the same pair twice"' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l max-retry-wait -d 'Longest wait accepted before a retry; a longer Retry-After fails over instead' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l breaker-failures -d 'Consecutive failures (5xx, timeouts, connection errors) that open a model\'s circuit; 0 turns circuit breaking off' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l breaker-cooldown -d 'How long an open circuit skips its model before one request probes it again; each failed probe doubles the wait (up to 60s)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l max-body-bytes -d 'Largest request body accepted (bytes); larger ones get 413' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l header-read-timeout -d 'Close connections that do not send a full request head (line and headers) within this time (slow clients, slow-loris)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l body-read-timeout -d 'A request body must arrive within this time once the gateway starts reading it, else 408 and the connection is closed (stalled or trickled bodies)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l workers -d 'Threads serving connections; 0 means one per core. A connection and the upstream connections its requests use stay on one thread' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l max-connections -d 'Most client connections served at once; more wait in the listen backlog until one closes. 0: half the open-file limit (each proxied request also holds an upstream socket)' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l health-interval -d 'How often each provider is health-checked (`/api/version`, `/api/tags`, `/api/ps`); a box that does not answer is checked again after a backoff doubling up to 60s' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l max-in-flight -d 'Most requests in flight to provider ID at once (repeatable: `--max-in-flight gpu-a=1`); more wait in a first-in-first-out queue. For an Ollama box, its OLLAMA_NUM_PARALLEL' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l queue-depth -d 'Most requests waiting per limited provider; past it, 429 with Retry-After' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l queue-timeout -d 'Longest a request waits in the queue before 429 with Retry-After' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l keep-warm -d 'Keep the policy\'s models loaded on each Ollama box that has them: a load-only request with this `keep_alive` every half of it, never while a real request runs on the model' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l drain-timeout -d 'On SIGTERM (or Ctrl-C): `/readyz` answers 503, new connections are refused, and requests and streams in flight get this long to finish; then what is still open ends with an error event and the process exits 0. Keep it below Kubernetes\' terminationGracePeriodSeconds' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l state -d 'Share circuit breakers, box health, rate-limit windows and `m.metrics` figures with other replicas through Redis: `redis://[:PASSWORD@]HOST:PORT[/DB]` or `rediss://…` (a password can come from AIGW_STATE_PASSWORD instead). Off: each process learns alone' -r
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l log-format -d 'Log format for request logs' -r -f -a "text\t''
json\t''"
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l no-stream-continuation -d 'Do not continue a chat stream that fails midway (cut, stalled, closed unfinished) on the plan\'s next candidate: end it with an error event instead'
complete -c aigw -n "__fish_aigw_using_subcommand serve" -l no-reload -d 'Do not watch the policy file for changes'
complete -c aigw -n "__fish_aigw_using_subcommand serve" -s h -l help -d 'Print help'
complete -c aigw -n "__fish_aigw_using_subcommand probe" -s p -l policy -d 'Policy file (YAML or JSON). Default: ./policy.yaml, else the built-in policy' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l base-url -d 'Map a provider to a local address, e.g. `--base-url ollama=http://localhost:11434` (also AIGW_BASE_URL_<ID>)' -r
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l secrets -d 'YAML file of secrets (`vault: {name: value}`) for `${secrets.get(\'vault\', \'name\')}`; AIGW_SECRET_<VAULT>_<NAME> variables win over it' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l keep-alive -d 'keep_alive sent with the pre-warm request (`-1` keeps the model loaded)' -r
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l timeout -d 'Timeout for each check (a pre-warm waits at least 5m, Ollama\'s own load limit)' -r
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l format -d 'Output format' -r -f -a "table\t'Text for people'
json\t'JSON for scripts'"
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l warm -d 'Pre-warm each policy model on Ollama providers (default)'
complete -c aigw -n "__fish_aigw_using_subcommand probe" -l no-warm -d 'Skip pre-warming'
complete -c aigw -n "__fish_aigw_using_subcommand probe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c aigw -n "__fish_aigw_using_subcommand convert" -s o -l output -d 'Write the policy to this file instead of standard output' -r -F
complete -c aigw -n "__fish_aigw_using_subcommand convert" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand convert" -s h -l help -d 'Print help'
complete -c aigw -n "__fish_aigw_using_subcommand init" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand init" -l force -d 'Overwrite an existing file'
complete -c aigw -n "__fish_aigw_using_subcommand init" -s h -l help -d 'Print help'
complete -c aigw -n "__fish_aigw_using_subcommand schema" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand schema" -s h -l help -d 'Print help'
complete -c aigw -n "__fish_aigw_using_subcommand completions" -l color -d 'When to use colour: auto (terminal, unless NO_COLOR is set), always or never' -r -f -a "auto\t''
always\t''
never\t''"
complete -c aigw -n "__fish_aigw_using_subcommand completions" -s h -l help -d 'Print help'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "validate" -d 'Check policy files: schema, meaning and CEL strategies, with located diagnostics'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "explain" -d 'Dry-run routing: which strategy matches and the ordered candidates a request would try'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "test" -d 'Run routing test files (request → expected candidates) against their policies'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "serve" -d 'Serve an OpenAI-compatible (and Ollama-compatible) gateway locally, with failover'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "probe" -d 'Check providers: reachability, installed models, pre-warm Ollama models'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "convert" -d 'Turn a LiteLLM proxy config.yaml into a policy; report what cannot carry over'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "init" -d 'Write the built-in default policy to a file to start from'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "schema" -d 'Print the JSON Schema of policy.yaml (for editors and yaml-language-server)'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c aigw -n "__fish_aigw_using_subcommand help; and not __fish_seen_subcommand_from validate explain test serve probe convert init schema completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
