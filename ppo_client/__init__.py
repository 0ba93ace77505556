"""PPO client: pretrain a tiny policy, fine-tune it with PPO against the reward service."""
