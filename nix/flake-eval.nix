# Evaluates flake.nix's outputs with nixpkgs' lib and a stand-in for the rest of nixpkgs (packages
# are attribute sets that record their arguments), to check the flake's shape, the package's
# build settings, the module's wiring to the flake's package and the VM test's script. Used by
# tests/nixos_module.rs where STEPWISE_NIXPKGS_LIB is set; `nix flake check` does the real thing.
{ lib }:

let
  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgsFor = system: {
    inherit lib;
    stdenv.hostPlatform.system = system;
    callPackage = fn: args: import fn ({
      inherit lib;
      rustPlatform.buildRustPackage = a: fakeDrv "${a.pname}-${a.version}-${system}" // {
        buildArgs = removeAttrs a [ "src" ];
      };
      installShellFiles = fakeDrv "install-shell-files";
    } // args);
    testers.runNixOSTest = test: fakeDrv "vm-test" // { inherit test; };
    mkShell = _: fakeDrv "shell";
    clippy = fakeDrv "clippy";
    rustfmt = fakeDrv "rustfmt";
  };
  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
  };
  flake = import ../flake.nix;
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };

  system = "x86_64-linux";
  package = outputs.packages.${system}.default;
  vmTest = outputs.checks.${system}.vm-test.test;
  # The flake's module in module-eval.nix's stubs, with no package set: the flake's must be used.
  moduleEval = import ./module-eval.nix {
    inherit lib;
    module = outputs.nixosModules.default;
    pkgsExtra.stdenv.hostPlatform.system = system;
    settings = builtins.toJSON { enable = true; flake = "/etc/nixos"; };
  };
  toplevel = {
    drvPath = "/nix/store/22222222222222222222222222222222-nixos-system-machine.drv";
    outPath = "/nix/store/33333333333333333333333333333333-nixos-system-machine";
  };
  # The VM test's machine, in the same stubs plus what it sets beyond services.stepwise.
  machineEval = import ./module-eval.nix {
    inherit lib;
    module = vmTest.nodes.machine;
    pkgsExtra.stdenv.hostPlatform.system = system;
    settings = "{}";
    extraModules = [{
      options.virtualisation = lib.mkOption { type = lib.types.attrsOf lib.types.anything; };
      options.system.build = lib.mkOption { type = lib.types.attrsOf lib.types.anything; };
      config.system.build = { inherit toplevel; };
    }];
  };
in
{
  inherit (flake) description;
  inputs = flake.inputs.nixpkgs.url;
  outputNames = builtins.attrNames outputs;
  systems = builtins.attrNames outputs.packages;
  packageNames = builtins.attrNames outputs.packages.${system};
  checkNames = builtins.attrNames outputs.checks.${system};
  package = {
    inherit (package) name;
    inherit (package.buildArgs) pname version cargoBuildFlags cargoTestFlags postInstall cargoLock;
    meta = { inherit (package.buildArgs.meta) mainProgram description; };
  };
  overlayPackage = (outputs.overlays.default (pkgsFor system) { }).stepwise.name;
  moduleExecStart = moduleEval.services.stepwise-upgrade.serviceConfig.ExecStart;
  vmTest = {
    inherit (vmTest) name;
    testScript = vmTest.testScript { nodes.machine.system.build = { inherit toplevel; }; };
    machine = {
      inherit (machineEval) failedAssertions etc;
      additionalPaths = machineEval.virtualisation.additionalPaths;
      execStart = machineEval.services.stepwise-upgrade.serviceConfig.ExecStart;
    };
  };
}
