{
  description = "stepwise: crash-safe NixOS upgrades for machines whose disk cannot hold the old and the new system at once";
  outputs = { self }: { };
}
