# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_stepwise_global_optspecs
    string join \n journal= config= json v/verbose q/quiet nix-option= h/help V/version
end

function __fish_stepwise_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_stepwise_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_stepwise_using_subcommand
    set -l cmd (__fish_stepwise_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c stepwise -n "__fish_stepwise_needs_command" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_needs_command" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_needs_command" -l nix-option -d 'A Nix setting for evaluating and building the target, passed to Nix as `--option NAME VALUE`; repeatable, before COMMAND: `stepwise --nix-option builders \'ssh://big x86_64-linux\' upgrade ...`; `--nix-option tarball-ttl 0` is what `nix --refresh` does (flake inputs fetched afresh)' -r
complete -c stepwise -n "__fish_stepwise_needs_command" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_needs_command" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_needs_command" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stepwise -n "__fish_stepwise_needs_command" -s V -l version -d 'Print version'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "plan" -d 'Show what an upgrade would do: the package diff, the steps, and the peak disk use'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "upgrade" -d 'Upgrade to the target: plainly if it fits, otherwise step by step'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "resume" -d 'Continue an interrupted run from the journal'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "unwind" -d 'Walk an interrupted or held run back to the generation it started from'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "status" -d 'Where the last run stands'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "journal" -d 'Read and check the journal'
complete -c stepwise -n "__fish_stepwise_needs_command" -f -a "drv" -d 'Derivation tools'
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l target -d 'The target toplevel derivation (`/nix/store/…-nixos-system-….drv`)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l flake -d 'A flake, `REF[#host]` (host defaults to this machine\'s hostname)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l file -d 'A Nix file evaluating to a NixOS system (or its toplevel derivation)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l attr -d 'Attribute of --file to evaluate' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l profile -d 'The system profile' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l current-system -d 'The link to the running system' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l booted-system -d 'The link to the system booted last' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l non-vital -d 'A package that may be removed for the duration and comes back upgraded (repeatable; names as in `stepwise plan`). Checked before anything changes: one whose files the system\'s configuration reads is refused' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l together -d 'Packages that must move in the same step, comma-separated (repeatable)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l reserve -d 'Space kept free for the journal and Nix\'s database: bytes, or with K/M/G (binary: 64M). Default: 1% of the store\'s filesystem, at least 1M, at most 256M' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l reboot -d 'Whether stepwise may reboot when only a reboot frees the booted system\'s packages' -r -f -a "never\t''
when-needed\t''"
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l keep-previous -d 'Keep the starting generation as a rollback generation (`nixos-rebuild --rollback`) when the plan shows room for it beside the target; otherwise the run goes on and says why not'
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand plan" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l target -d 'The target toplevel derivation (`/nix/store/…-nixos-system-….drv`)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l flake -d 'A flake, `REF[#host]` (host defaults to this machine\'s hostname)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l file -d 'A Nix file evaluating to a NixOS system (or its toplevel derivation)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l attr -d 'Attribute of --file to evaluate' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l profile -d 'The system profile' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l current-system -d 'The link to the running system' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l booted-system -d 'The link to the system booted last' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l non-vital -d 'A package that may be removed for the duration and comes back upgraded (repeatable; names as in `stepwise plan`). Checked before anything changes: one whose files the system\'s configuration reads is refused' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l together -d 'Packages that must move in the same step, comma-separated (repeatable)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l reserve -d 'Space kept free for the journal and Nix\'s database: bytes, or with K/M/G (binary: 64M). Default: 1% of the store\'s filesystem, at least 1M, at most 256M' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l reboot -d 'Whether stepwise may reboot when only a reboot frees the booted system\'s packages' -r -f -a "never\t''
when-needed\t''"
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l action -d 'How the target is activated at the end. Intermediate steps are switched to, except with `test`, which never touches the boot loader (accepted only when the running system is the booted one, and not with --reboot when-needed)' -r -f -a "switch\t'Make it the boot default and activate it now'
boot\t'Make it the boot default; activate at the next boot'
test\t'Activate now without making it the boot default'"
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l strategy -d 'auto: plain upgrade when it fits, else steps; direct: plain only; stepwise: steps only' -r -f -a "auto\t''
direct\t''
stepwise\t''"
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l on-failure -d 'On a build failure: walk back to the starting generation, or stay at the last good step' -r -f -a "unwind\t''
hold\t''"
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l on-failed-units -d 'When switching to a generation leaves units failed (switch-to-configuration exit 4): continue (the outcome names them; exit 5 if the target\'s own switch did), or stop there (exit 3) until `stepwise resume --accept-failed-units` or `stepwise unwind`' -r -f -a "continue\t''
stop\t''"
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l reboot-command -d 'The command run for a reboot, split on whitespace (no shell)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l reboot-window -d 'Local times between which a reboot may happen, LOWER-UPPER (e.g. 01:00-05:00; may cross midnight). Outside it a run that needs a reboot stops (exit 3). Default: any time' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l boot-dir -d 'The boot partition (e.g. /boot). When it is another filesystem than the store\'s, check before changing anything that it has room for the kernels and initrds the run adds (sized from the running system\'s); without room: exit 3. Default: no check' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l keep-previous -d 'Keep the starting generation as a rollback generation (`nixos-rebuild --rollback`) when the plan shows room for it beside the target; otherwise the run goes on and says why not'
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand upgrade" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -l accept-failed-units -d 'Go on past a generation whose switch left units failed, where a run with `--on-failed-units stop` waits'
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand resume" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand unwind" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand status" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -f -a "show" -d 'A readable audit of the runs: when, what, outcome, space added and freed'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -f -a "verify" -d 'Check structure and hash chain; exit 4 naming what is wrong and where'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and not __fish_seen_subcommand_from show verify export" -f -a "export" -d 'Every record as a JSON line'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -l run -d 'Only this run' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand journal; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and not __fish_seen_subcommand_from inspect" -f -a "inspect" -d 'Parse a .drv file, recompute its path and output paths'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -l store-dir -d 'The store directory its paths live in (default: the running Nix\'s)' -r
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -l journal -d 'The run journal (one run at a time holds its lock)' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -l config -d 'Settings file (TOML; its keys are the long flags of `upgrade`); flags override it. Default: /etc/stepwise/config.toml if it exists' -r -F
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -l aterm -d 'Print the canonical ATerm bytes instead'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -l json -d 'Machine-readable output on stdout, always carrying "version": one JSON document from plan, status, drv inspect and journal verify; JSON lines, the first the version header, from upgrade, resume, unwind, journal show and journal export'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -s v -l verbose -d 'More detail (-v, -vv)'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -s q -l quiet -d 'Only errors'
complete -c stepwise -n "__fish_stepwise_using_subcommand drv; and __fish_seen_subcommand_from inspect" -s h -l help -d 'Print help'
