"""robo_genie package."""
