"""The HTTP API: OpenAI-compatible routes under Docker Model Runner's paths, management
routes, API keys, and the streaming forwarder to engine instances. ``create_app`` builds it;
``serve`` runs it with uvicorn."""
