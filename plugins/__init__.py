"""babelplug's built-in plugins. Each is loaded exactly like a third-party entry point."""
