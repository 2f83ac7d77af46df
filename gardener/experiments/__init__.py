"""The paper's experiments as cached, shardable job lists: oracle, sweeps, agreement."""
