# The stepwise package: the binary, its man pages and its bash/zsh/fish completions (generated into
# doc/ by `cargo run -p xtask -- gen-docs`, checked in, kept in step by tests/cli_docs.rs).
{ lib, rustPlatform, installShellFiles }:

let
  manifest = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "stepwise";
  inherit (manifest.package) version;

  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    # Build outputs and the fuzz crate (outside the workspace) are not sources.
    filter = path: type:
      !(lib.elem (baseNameOf path) [ "target" "result" "fuzz" ]);
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The workspace also holds the test bed and xtask: build and install stepwise alone.
  cargoBuildFlags = [ "--package" "stepwise" ];

  # The integration tests drive a real Nix on private stores and mount tmpfs as root, which the
  # build sandbox allows neither; they run in CI and with `./scripts/test.sh`. Here: the unit
  # tests and the check that the installed docs match the command line.
  cargoTestFlags = [ "--package" "stepwise" "--lib" "--test" "cli_docs" ];

  nativeBuildInputs = [ installShellFiles ];

  # No wrapper putting a Nix on PATH: stepwise must talk to the machine's own Nix (its version and
  # its daemon), which is on PATH on NixOS and in the module's units.
  postInstall = ''
    installManPage doc/man/*.1
    installShellCompletion --cmd stepwise \
      --bash doc/completions/stepwise.bash \
      --zsh doc/completions/_stepwise \
      --fish doc/completions/stepwise.fish
  '';

  meta = {
    inherit (manifest.package) description;
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "stepwise";
    platforms = lib.platforms.linux;
  };
}
