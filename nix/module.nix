# services.stepwise: crash-safe upgrades for NixOS machines whose disk cannot hold the old and the
# new system at once. Modelled on system.autoUpgrade (same option names where they mean the same).
#
# Units:
#   stepwise-upgrade.timer    fires `dates` (hourly by default)
#   stepwise-upgrade.service  `stepwise upgrade` with /etc/stepwise/config.toml and `flags`
#   stepwise-resume.service   at boot: `stepwise resume` finishes a run a crash, OOM kill, power cut
#                             or stepwise's own reboot interrupted (nothing to resume: exit 0)
#
# The settings file is `settings` (RFC 42): a freeform TOML document rendered by
# `pkgs.formats.toml`, whose keys are stepwise's long flags (src/cli/config.rs). The typed options
# below fill it at default priority, so a key set in `settings` wins over its typed option.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.stepwise;
  inherit (lib) mkOption types literalExpression;

  configPath = "/etc/stepwise/config.toml";

  settingsFormat = pkgs.formats.toml { };
  nonNull = lib.filterAttrs (_: v: v != null);

  # The typed options as settings, each at default priority (`settings` wins).
  typedSettings = lib.mapAttrsRecursive (_: lib.mkDefault) {
    journal = cfg.journal;
    upgrade = nonNull {
      flake = cfg.flake;
      action = cfg.action;
      non-vital = cfg.nonVital;
      together = cfg.together;
      reserve = cfg.reserve;
      on-failure = cfg.onFailure;
      on-failed-units = cfg.onFailedUnits;
      reboot = if cfg.allowReboot then "when-needed" else "never";
      reboot-window = if cfg.allowReboot then cfg.rebootWindow else null;
      boot-dir = cfg.bootDir;
      keep-previous = cfg.keepPrevious;
    };
    nix-options = nixOptions;
  };

  # One ExecStart argument: systemd unquotes C-style double-quoted words (JSON's escapes are a
  # subset) and expands % specifiers and $ variables, which must be doubled to stay literal.
  execArg = arg: lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON arg);
  execLine = args: lib.concatMapStringsSep " " execArg args;

  stepwise = "${cfg.package}/bin/stepwise";

  # A flake's inputs are fetched afresh on every run (what `nix --refresh` sets): otherwise an
  # hourly run evaluates inputs Nix cached up to an hour ago (`tarball-ttl`, 3600 s).
  evaluatesAFlake = cfg.flake != null || lib.elem "--flake" cfg.flags;
  nixOptions = lib.optionalAttrs (cfg.refresh && evaluatesAFlake) { tarball-ttl = "0"; }
    // lib.mapAttrs (_: showNixValue) cfg.nixOptions;
  showNixValue = v: if lib.isBool v then lib.boolToString v else toString v;
  # In the settings file, so that every command uses them: the services' evaluation and builds,
  # and a `stepwise resume` or `plan` run by hand.
  command = verb: [ stepwise "--config" configPath verb ];

  # rebootOnKernelChange: after a successful run, what `system.autoUpgrade.allowReboot` does
  # after its `nixos-rebuild boot`: reboot when the kernel, its modules or the initrd of the
  # system profile differ from the booted system's (within rebootWindow, if set).
  rebootIfKernelChanged = pkgs.writeShellScript "stepwise-reboot-if-kernel-changed" (''
    booted="$(readlink /run/booted-system/{initrd,kernel,kernel-modules})"
    built="$(readlink /nix/var/nix/profiles/system/{initrd,kernel,kernel-modules})"
    if [ "$booted" = "$built" ]; then exit 0; fi
  '' + lib.optionalString (cfg.rebootWindow != null) ''
    now="$(date +%H:%M)" lower=${lib.escapeShellArg cfg.rebootWindow.lower} upper=${lib.escapeShellArg cfg.rebootWindow.upper}
    if [[ "$lower" < "$upper" ]]; then
      if [[ "$now" < "$lower" || "$now" > "$upper" ]]; then echo "kernel changed: reboot outside $lower-$upper, left for later"; exit 0; fi
    elif [[ "$now" < "$lower" && "$now" > "$upper" ]]; then
      echo "kernel changed: reboot outside $lower-$upper, left for later"; exit 0
    fi
  '' + ''
    echo "kernel, modules or initrd changed: rebooting into the new system"
    systemctl reboot
  '');

  # Shared by both services: what Nix needs to fetch flakes and substitute, as for nixos-upgrade.
  environment = config.nix.envVars // {
    inherit (config.environment.sessionVariables) NIX_PATH;
    HOME = "/root";
  } // config.networking.proxy.envVars;

  path = [
    pkgs.coreutils
    pkgs.gnutar
    pkgs.xz.bin
    pkgs.gzip
    pkgs.gitMinimal
    config.nix.package.out
    config.programs.ssh.package
    # `reboot-command` defaults to `systemctl reboot`.
    config.systemd.package
  ];

  # nix-gc.service: when both are due at once (hourly timers, or at boot when both were
  # missed), the run starts after the collection ended, so the plan measures the space the
  # collection freed instead of racing its deletions. Only ordering: no Conflicts=, which would
  # stop a run hours long whenever the collection starts (or kill the collection when a run
  # starts). A collection during a run is safe: everything the run needs is rooted, the target's
  # .drv from the moment it is evaluated. Not Before=: the collection would wait for the run.
  afterGc = [ "nix-gc.service" ];

  serviceConfig = {
    Type = "oneshot";
    # An upgrade yields to the machine's real work. (Builds that go through nix-daemon run at
    # the daemon's priority instead: nix.daemonCPUSchedPolicy and nix.daemonIOSchedClass.)
    Nice = 19;
    CPUSchedulingPolicy = "idle";
    IOSchedulingClass = "idle";
    # On stop (shutdown, `systemctl stop`) SIGTERM goes to stepwise alone: it lets the running
    # nix-store or switch-to-configuration child finish, journals the transition, and exits 3
    # (resumable). With the default control-group mode the children would be killed in the middle
    # instead. Whatever is left after TimeoutStopSec gets SIGKILL; the journal makes even that safe,
    # the timeout only bounds how long a shutdown waits for a transition to finish.
    KillMode = "mixed";
    TimeoutStopSec = "15min";
    # A run may take hours on a slow link; the journal, not a timeout, decides when it is stuck.
    TimeoutStartSec = "infinity";
  };
in
{
  options.services.stepwise = {
    enable = lib.mkEnableOption ''
      stepwise: periodic NixOS upgrades that fit a small disk, by a chain of real intermediate
      generations when the plain upgrade does not fit, resumable after any interruption'';

    package = lib.mkPackageOption pkgs "stepwise" {
      extraDescription = "The flake's `nixosModules.default` sets the flake's own package.";
    };

    flake = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "github:me/nixos-config#web";
      description = ''
        The flake of the NixOS configuration to upgrade to, `REF[#HOST]` (the host defaults to
        this machine's hostname). Leave null only if `flags` name a target (`--target` or `--file`).
      '';
    };

    refresh = mkOption {
      type = types.bool;
      default = true;
      description = ''
        With a flake target: fetch its inputs afresh on every run, as `nix --refresh` (Nix's
        `tarball-ttl` set to 0), so that an hourly run never evaluates a cached, stale input.
      '';
    };

    nixOptions = mkOption {
      type = types.attrsOf (types.oneOf [ types.str types.int types.bool ]);
      default = { };
      example = literalExpression ''{ builders = "ssh://big x86_64-linux - 8"; max-jobs = 0; }'';
      description = ''
        Nix settings for evaluating and building the target (and for the builds of a resumed
        run): the settings file's `[nix-options]`, which every stepwise command passes to Nix as
        `--option NAME VALUE` (as `--nix-option NAME VALUE` would). Set here rather than in
        `nix.settings` when only upgrades should use them.
      '';
    };

    flags = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--strategy" "stepwise" "-v" ];
      description = "Additional arguments passed to `stepwise upgrade`; they win over the settings file.";
    };

    dates = mkOption {
      type = types.str;
      default = "hourly";
      example = "04:40";
      description = "When upgrades run, in the format of {manpage}`systemd.time(7)` (`OnCalendar=`).";
    };

    randomizedDelaySec = mkOption {
      type = types.str;
      default = "0";
      example = "45min";
      description = "A random delay, between zero and this span, added before each run.";
    };

    persistent = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Catch up on a run missed while the machine was off, at the next boot (after
        `stepwise-resume.service` has finished).
      '';
    };

    action = mkOption {
      type = types.enum [ "switch" "boot" "test" ];
      default = "switch";
      description = ''
        How the target is activated at the end. Intermediate generations are always switched to:
        that is what lets the old packages go before the next step is built.
      '';
    };

    nonVital = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "firefox" "libreoffice" ];
      description = ''
        Packages (names as `stepwise plan` shows them) that may be removed for the length of a run
        when nothing else fits; they come back upgraded at the end.
      '';
    };

    together = mkOption {
      type = types.listOf (types.listOf types.str);
      default = [ ];
      example = [ [ "openssl" "curl" ] ];
      description = "Groups of packages that must move in the same step.";
    };

    reserve = mkOption {
      type = types.nullOr (types.either types.ints.unsigned (types.strMatching "[0-9]+[KMGTkmgt]?"));
      default = null;
      example = "64M";
      description = ''
        Space kept free for the journal and Nix's database: bytes, or with K/M/G/T (binary).
        null: 1% of the store's filesystem, at least 1M, at most 256M.
      '';
    };

    onFailedUnits = mkOption {
      type = types.enum [ "continue" "stop" ];
      default = "continue";
      description = ''
        When switching to a generation leaves systemd units failed (`switch-to-configuration`
        exit 4): go on (`continue`; the run ends with exit 5 when the target's own switch did,
        naming the units), or stop at that generation (`stop`; exit 3) until you run
        `stepwise resume --accept-failed-units` or `stepwise unwind`. Either way the units are
        recorded in the journal, and an hourly run never switches again for them.
      '';
    };

    onFailure = mkOption {
      type = types.enum [ "unwind" "hold" ];
      default = "unwind";
      description = ''
        On a failed build: walk back to the generation the run started from (`unwind`), or stay at
        the last good step (`hold`) until you run `stepwise unwind` or `stepwise resume`.
      '';
    };

    onFailureUnits = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "notify-admin@%n.service" ];
      description = ''
        systemd units to start when a run fails or stops before the end (`OnFailure=` of both
        services; `%n` is the failed unit's name). Every exit but 0 counts: 1 failed and unwound,
        2 bad settings, 3 stopped (no room, reboot pending outside `rebootWindow`, interrupted;
        a later run or `stepwise resume` continues), 4 journal unusable, 5 the target was
        reached but units failed to start.
        (`onFailure` is taken: it is what stepwise does on a failed build.)
      '';
    };

    allowReboot = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Let stepwise reboot in the middle of a run when only a reboot frees the booted system's
        packages (the run goes on after the boot, from `stepwise-resume.service`). See
        `rebootWindow`.

        Not the same as `system.autoUpgrade.allowReboot`, which reboots after the upgrade when
        the new kernel, modules or initrd differ from the booted ones: that is
        `rebootOnKernelChange` here. The two can be set together.
      '';
    };

    rebootOnKernelChange = mkOption {
      type = types.bool;
      default = false;
      description = ''
        After a successful run, reboot when the system profile's kernel, kernel modules or initrd
        differ from the booted system's: what `system.autoUpgrade.allowReboot` does. Within
        `rebootWindow` when that is set (outside it, a later run reboots). With `action = "test"`
        the profile does not change, so this never reboots.
      '';
    };

    rebootWindow = mkOption {
      default = null;
      example = { lower = "01:00"; upper = "05:00"; };
      description = ''
        Local times between which a reboot may happen (from `lower` to `upper`, across midnight
        when `lower` is later). Outside it a run that needs a reboot stops (exit 3) and a later
        run continues. null: any time. Only with `allowReboot`.
      '';
      type = types.nullOr (types.submodule {
        options = {
          lower = mkOption {
            type = types.strMatching "[[:digit:]]{2}:[[:digit:]]{2}";
            example = "01:00";
            description = "Start of the reboot window.";
          };
          upper = mkOption {
            type = types.strMatching "[[:digit:]]{2}:[[:digit:]]{2}";
            example = "05:00";
            description = "End of the reboot window.";
          };
        };
      });
    };

    bootDir = mkOption {
      type = types.nullOr (types.strMatching "/.*");
      default = null;
      example = "/boot";
      description = ''
        The boot partition. When it is a filesystem of its own, stepwise checks before a run that
        it has room for the kernels and initrds the run adds (sized from the running system's),
        and otherwise stops (exit 3) saying what to delete. null: no check.
      '';
    };

    keepPrevious = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Keep the generation a run starts from as the one before the target, so that
        `nixos-rebuild --rollback` (or the boot menu) can go back to it, when the plan shows room
        for it beside the target: only a plain upgrade that fits can keep it. When the run goes in
        steps (old and new do not fit together) it proceeds as without this option, and says in
        the log why the starting generation could not be kept.
      '';
    };

    settings = mkOption {
      type = settingsFormat.type;
      default = { };
      example = literalExpression ''{ upgrade.strategy = "stepwise"; nix-options.max-jobs = 2; }'';
      description = ''
        The settings file `/etc/stepwise/config.toml`, as TOML: top-level `journal`, the table
        `upgrade` (keys: the long flags of `stepwise upgrade`, e.g. `strategy`, `reboot-command`)
        and the table `nix-options` (Nix settings for every command). The typed options of this
        module fill it; a key set here wins over its typed option. A key stepwise does not know
        makes every command fail with exit 2, naming it.
      '';
    };

    journal = mkOption {
      type = types.strMatching "/.+/[^/]+";
      default = "/var/lib/stepwise/journal.redb";
      description = "The run journal; its directory is created 0700, root only.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.flake != null || cfg.settings.upgrade ? flake
          || lib.any (f: lib.elem f [ "--flake" "--target" "--file" ]) cfg.flags;
        message = "services.stepwise: set `flake` (or give --target or --file in `flags`): stepwise needs to know what to upgrade to.";
      }
      {
        assertion = cfg.rebootWindow == null || cfg.rebootWindow.lower != cfg.rebootWindow.upper;
        message = "services.stepwise.rebootWindow: lower and upper are equal, so the window is empty; set null to allow any time.";
      }
    ];

    environment.systemPackages = [ cfg.package ];

    services.stepwise.settings = typedSettings;

    environment.etc."stepwise/config.toml".source =
      settingsFormat.generate "stepwise-config.toml" cfg.settings;

    systemd.tmpfiles.rules = [ "d ${dirOf cfg.settings.journal} 0700 root root -" ];

    systemd.services.stepwise-upgrade = {
      description = "stepwise: upgrade NixOS within the disk it has";
      documentation = [ "man:stepwise(1)" ];
      # switch-to-configuration runs from inside this unit: restarting or stopping it there would
      # kill the run that is switching. (stopIfChanged only matters for units that get restarted.)
      restartIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      wants = [ "network-online.target" ];
      # Never overlap the boot-time resume. Ordering the service rather than the timer keeps
      # timers.target (which every timer is ordered before) from waiting for a long resume.
      after = [ "network-online.target" "stepwise-resume.service" ] ++ afterGc;
      onFailure = cfg.onFailureUnits;
      inherit environment path;
      serviceConfig = serviceConfig // {
        ExecStart = execLine (command "upgrade" ++ cfg.flags);
      } // lib.optionalAttrs cfg.rebootOnKernelChange {
        # Only after a run that succeeded (ExecStartPost is skipped when ExecStart fails).
        ExecStartPost = "${rebootIfKernelChanged}";
      };
    };

    systemd.timers.stepwise-upgrade = {
      description = "stepwise: upgrade NixOS ${cfg.dates}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.dates;
        RandomizedDelaySec = cfg.randomizedDelaySec;
        Persistent = cfg.persistent;
        Unit = "stepwise-upgrade.service";
      };
    };

    systemd.services.stepwise-resume = {
      description = "stepwise: finish an interrupted upgrade";
      documentation = [ "man:stepwise(1)" ];
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ afterGc;
      onFailure = cfg.onFailureUnits;
      # Run once per boot: a oneshot that went inactive would be started again by every
      # switch-to-configuration (it restarts active targets), and so in the middle of a run,
      # where it would find the journal locked.
      restartIfChanged = false;
      unitConfig.X-StopOnRemoval = false;
      inherit environment path;
      serviceConfig = serviceConfig // {
        RemainAfterExit = true;
        ExecStart = execLine (command "resume");
      };
    };
  };
}
