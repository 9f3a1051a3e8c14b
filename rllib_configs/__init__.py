"""RLlib experiment configs: one experiment per file (an `experiment()` built on
`roadsense.rllib.ppo.build_config`, and `STOP`). Tune search spaces live in
`roadsense.cloud.sweep`."""
