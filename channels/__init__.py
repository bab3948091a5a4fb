"""Channel adapters: verify the provider, parse its payload into an Interaction, send replies."""
