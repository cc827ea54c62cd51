//! The real-Nix test bed (design §8): private stores in temp dirs, optionally on a size-limited
//! tmpfs, a file:// binary cache, GC-root links, and a NixOS-shaped fixture. Used by the
//! integration tests and by the demo; never by the product.
