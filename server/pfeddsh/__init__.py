"""pFedDSH's server-side pieces besides its strategy: DeepInversion, replay, plots."""
