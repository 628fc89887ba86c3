"""The HTTP API and the help-center widget (see app.py); `bot.surfaces.api:app_from_environment` is the
uvicorn factory the CLI starts."""

from bot.surfaces.api.app import app_from_environment, create_app

__all__ = ["app_from_environment", "create_app"]
