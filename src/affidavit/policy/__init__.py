"""Policy as code: the policy file, the controls catalog and the pure rules that evaluate
facts about the inventory and its history (layer 3: no I/O here)."""
