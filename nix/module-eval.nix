# Evaluates module.nix with nixpkgs' lib alone, against stubs of the NixOS options it sets, and
# returns what it generates. Used by tests/nixos_module.rs where STEPWISE_NIXPKGS_LIB points at a
# nixpkgs (or nixpkgs.lib) checkout; a machine with nixpkgs has the real check in the flake.
#
#   nix-instantiate --eval --strict --json nix/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs-lib/lib' --argstr settings '{"enable":true,...}'
#
# `module` (default: module.nix) lets flake-eval.nix pass the flake's wrapper of it, or the VM
# test's machine with `extraModules` stubbing what that sets.
{ lib, settings, module ? ./module.nix, pkgsExtra ? { }, extraModules ? [ ] }:

let
  inherit (lib) mkOption types;
  anything = mkOption { type = types.anything; default = { }; };
  # pkgs.formats.toml without nixpkgs (whose `generate` runs remarshal in a build): the same
  # freeform type as far as merging goes, and TOML written here, to a file in the evaluation's
  # store, for the test to parse with stepwise's own reader.
  fakeToml = { }: {
    type = types.attrsOf types.anything;
    generate = name: value: builtins.toFile name (tomlDocument value);
  };
  tomlKey = k: if builtins.match "[A-Za-z0-9_-]+" k != null then k else builtins.toJSON k;
  # Strings, integers and booleans are written as JSON writes them (a subset of TOML's basic
  # strings); tables nested in a table are inline.
  tomlValue = v:
    if builtins.isAttrs v then
      "{ " + lib.concatStringsSep ", " (lib.mapAttrsToList (k: x: "${tomlKey k} = ${tomlValue x}") v) + " }"
    else if builtins.isList v then "[" + lib.concatMapStringsSep ", " tomlValue v + "]"
    else builtins.toJSON v;
  tomlLines = attrs: lib.concatStrings (lib.mapAttrsToList (k: v: "${tomlKey k} = ${tomlValue v}\n") attrs);
  tomlDocument = doc:
    tomlLines (lib.filterAttrs (_: v: !builtins.isAttrs v) doc)
    + lib.concatStrings (lib.mapAttrsToList (k: t: "\n[${tomlKey k}]\n" + tomlLines t)
      (lib.filterAttrs (_: builtins.isAttrs) doc));
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  stubs = {
    # The NixOS options module.nix reads or sets, declared loosely: their real types live in
    # nixpkgs' modules, which this evaluation does not load.
    options = {
      assertions = mkOption { type = types.listOf types.anything; default = [ ]; };
      environment.systemPackages = mkOption { type = types.listOf types.anything; default = [ ]; };
      environment.etc = mkOption { type = types.attrsOf types.anything; default = { }; };
      environment.sessionVariables = anything;
      systemd.services = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.timers = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      systemd.package = anything;
      nix.package = anything;
      nix.envVars = anything;
      networking.proxy.envVars = anything;
      programs.ssh.package = anything;
    };
    config = {
      environment.sessionVariables.NIX_PATH = "nixpkgs=/nix/var/nix/profiles/per-user/root/channels/nixos";
      nix.package = fakePackage "nix-2.18.1" // { out = fakePackage "nix-2.18.1"; };
      nix.envVars = { };
      networking.proxy.envVars = { };
      programs.ssh.package = fakePackage "openssh-9.6p1";
      systemd.package = fakePackage "systemd-255";
      _module.args.pkgs = {
        stepwise = fakePackage "stepwise-from-pkgs";
        coreutils = fakePackage "coreutils-9.4";
        gnutar = fakePackage "gnutar-1.35";
        xz = { bin = fakePackage "xz-5.4.6-bin"; };
        gzip = fakePackage "gzip-1.13";
        gitMinimal = fakePackage "git-minimal-2.44.0";
        # A real file in the evaluation's own store, for the test to read (and check with bash).
        writeShellScript = name: text: builtins.toFile name text;
        formats.toml = fakeToml;
      } // pkgsExtra;
    };
  };
  evaluated = lib.evalModules {
    modules = [ stubs module { services.stepwise = builtins.fromJSON settings; } ] ++ extraModules;
  };
  c = evaluated.config;
in
{
  virtualisation = c.virtualisation or null;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
  services = c.systemd.services;
  timers = c.systemd.timers;
  tmpfiles = c.systemd.tmpfiles.rules;
  # A file's text, whether set as text or as a file (`source`, pkgs.formats.toml's).
  etc = lib.mapAttrs (_: e: e.text or (builtins.readFile e.source)) c.environment.etc;
  systemPackages = map (p: p.name) c.environment.systemPackages;
}
