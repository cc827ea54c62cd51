{
  description = "stepwise: crash-safe NixOS upgrades for machines whose disk cannot hold the old and the new system at once";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        stepwise = pkgs.callPackage ./nix/package.nix { };
        default = stepwise;
      });

      overlays.default = final: _prev: {
        stepwise = final.callPackage ./nix/package.nix { };
      };

      # The module, with this flake's package as its default (nix/module.nix alone defaults to
      # pkgs.stepwise, for use with the overlay).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.stepwise.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };
      nixosModules.stepwise = self.nixosModules.default;

      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        vm-test = pkgs.testers.runNixOSTest (import ./nix/vm-test.nix { inherit self; });
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = [ pkgs.clippy pkgs.rustfmt ];
        };
      });
    };
}
