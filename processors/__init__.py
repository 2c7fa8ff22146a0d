"""Ready-to-run analysis processors built on jettagger_coffea."""
