# NixOS VM test of services.stepwise (runs on a machine with nixpkgs and KVM: `nix flake check`).
# Boots a machine with the module, checks the boot-time resume found nothing to do, runs the
# timer's service once with the running system itself as the target, and reads the journal back.
{ self }:

{
  name = "stepwise";

  nodes.machine = { config, ... }: {
    imports = [ self.nixosModules.default ];

    services.stepwise = {
      enable = true;
      # A realistic setting, replaced below: a flake cannot be fetched inside the test.
      flake = "/etc/nixos#machine";
      reserve = "8M";
    };

    # The target of the test run is this very system's toplevel .drv. Its closure of .drv files
    # (not their outputs: unsafeDiscardOutputDependency) must be in the VM's store. That is the
    # VM's registration, not part of the system, so there is no cycle.
    virtualisation.additionalPaths = [
      (builtins.unsafeDiscardOutputDependency config.system.build.toplevel.drvPath)
    ];
    virtualisation.memorySize = 1024;
  };

  testScript = { nodes, ... }:
    let
      toplevel = nodes.machine.system.build.toplevel;
      drv = builtins.unsafeDiscardOutputDependency toplevel.drvPath;
    in
    ''
      machine.wait_for_unit("multi-user.target")

      with subtest("units are installed"):
          machine.succeed("systemctl cat stepwise-upgrade.service stepwise-resume.service stepwise-upgrade.timer")
          machine.succeed("systemctl is-enabled stepwise-upgrade.timer")
          # The units as NixOS wrote them (tests/nixos_module.rs checks a rendering of its own).
          machine.succeed("systemd-analyze verify --man=no stepwise-upgrade.service stepwise-resume.service stepwise-upgrade.timer")
          machine.succeed("systemctl list-timers --all | grep stepwise-upgrade.timer")
          machine.succeed("test \"$(stat -c %a /var/lib/stepwise)\" = 700")
          machine.succeed("man -w stepwise")

      with subtest("boot-time resume: nothing to resume is success"):
          # RemainAfterExit: active once `stepwise resume` exited 0; wait_for_unit fails if it failed.
          machine.wait_for_unit("stepwise-resume.service")
          machine.succeed("systemctl show -P ExecMainStatus stepwise-resume.service | grep -x 0")

      with subtest("the settings file holds the module's options"):
          machine.succeed("grep -Fx 'reserve = \"8M\"' /etc/stepwise/config.toml")

      with subtest("one timer run, to the running system"):
          # Same settings, with this system's .drv as the target instead of the flake.
          machine.succeed(
              "sed 's|^flake = .*|target = \"${drv}\"|' /etc/stepwise/config.toml > /tmp/config.toml"
              " && rm /etc/stepwise/config.toml && mv /tmp/config.toml /etc/stepwise/config.toml"
          )
          # A oneshot: start returns when the run has ended, and fails if it failed.
          machine.succeed("systemctl start stepwise-upgrade.service")
          machine.succeed("systemctl show -P Result stepwise-upgrade.service | grep -x success")
          machine.succeed("systemctl show -P ExecMainStatus stepwise-upgrade.service | grep -x 0")
          machine.succeed("test \"$(readlink -f /run/current-system)\" = ${toplevel}")

      with subtest("status and journal"):
          # Already at the target: done, and no run was journaled.
          machine.succeed("journalctl -u stepwise-upgrade.service | grep -F 'nothing to do'")
          machine.fail("test -e /var/lib/stepwise/journal.redb")
          print(machine.succeed("stepwise status"))
          print(machine.succeed("stepwise journal show"))
    '';
}
