"""Code shared by the ServerApp and the ClientApps: config, data, models, records."""
