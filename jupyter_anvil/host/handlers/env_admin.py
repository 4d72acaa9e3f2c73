"""The environments admin API (Jupyter auth): the Python environments apps run in, a
build's output, and adding or removing an app's requirements (written into its notebook)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import api_types as api
from ..apps import AppManager
from ..envs.request import EnvRequestError
from ..envs.service import EnvInfo
from ..requirements_edit import RequirementsEditError, edit_requirements
from .admin import AdminHandler, JsonBodyHandler
from .base import services

CHANGE_FIELDS = ("add", "remove")
CHANGE_EXAMPLE = '{"add": ["requests>=2.31"], "remove": ["pandas"]}'


def env_json(info: EnvInfo) -> api.EnvInfo:
    return {
        "id": info.id,
        "requirements": list(info.requirements),
        "python": info.python,
        "status": info.status,
        "error": info.error,
        "size_bytes": info.size_bytes,
        "created": info.created,
        "last_used": info.last_used,
        "apps": sorted(info.apps),
    }


def env_feed_event(event: dict[str, Any]) -> api.EnvEvent | api.EnvOutputEvent | None:
    """An event of the environment service as the live feed shows it (None: not one of its kinds)."""
    if event.get("type") == "env_output":
        offset = event.get("offset")
        return {
            "type": "env_output",
            "id": str(event.get("id")),
            "text": str(event.get("text")),
            "offset": offset if isinstance(offset, int) else 0,
        }
    if event.get("type") == "env":
        env = event.get("env")
        if isinstance(env, EnvInfo):
            return {"type": "env", "env": env_json(env)}
        if isinstance(env, dict):  # already JSON: only the fields the API declares
            shown = cast("api.EnvInfo", {key: env.get(key) for key in api.EnvInfo.__annotations__})
            shown["requirements"] = list(shown["requirements"] or [])
            shown["apps"] = sorted(shown["apps"] or [])
            return {"type": "env", "env": shown}
    return None


class EnvsHandler(AdminHandler):
    """``GET anvil/api/envs``: every environment, newest use first."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        found = services(self).envs.list()
        found.sort(key=lambda e: (-(e.last_used or e.created or 0), e.id))
        answer: api.EnvList = {"envs": [env_json(e) for e in found]}
        self.finish(json.dumps(answer))


class EnvLogHandler(AdminHandler):
    """``GET anvil/api/envs/<id>/log?offset=N``: the build's output from ``offset`` on."""

    @web.authenticated
    @authorized
    async def get(self, env_id: str) -> None:
        envs = services(self).envs
        info = envs.get(env_id)
        if info is None:
            raise web.HTTPError(404, f"no environment {env_id}")
        text = self.get_argument("offset", "0")
        try:
            offset = int(text)
        except ValueError:
            raise web.HTTPError(400, f"offset must be a whole number, not {text[:40]!r}") from None
        if not 0 <= offset < 2**63:
            raise web.HTTPError(400, f"offset must be a whole number from 0, not {text[:40]!r}")
        # a known environment whose log is not there (not written yet, or being moved from
        # the build folder into the cache) has no output yet: the reader asks again later
        found = envs.log(env_id, offset) or ("", offset)
        answer: api.EnvLog = {"text": found[0], "offset": found[1], "building": info.status == "building"}
        self.finish(json.dumps(answer))


class RequirementsHandler(JsonBodyHandler):
    """``POST anvil/api/apps/<app>/requirements`` ``{"add": [...], "remove": [...]}``:
    the notebook's ``metadata.jupyter_anvil.requirements`` changed, and the new list."""

    body_name = "a requirements change"

    def _change(self) -> dict[str, Any]:
        body = self.json_body(None)
        if not isinstance(body, dict):
            raise web.HTTPError(400, f"the body must be a JSON object like {CHANGE_EXAMPLE}")
        unknown = sorted(set(body) - set(CHANGE_FIELDS))
        if unknown:
            raise web.HTTPError(400, f"unknown field {unknown[0][:60]!r}: a change takes only add and remove")
        if not body:
            raise web.HTTPError(400, f"a change needs add or remove, like {CHANGE_EXAMPLE}")
        return body

    @web.authenticated
    @authorized
    async def post(self, app: str) -> None:
        body = self._change()
        manager = services(self).apps
        await manager.scanned.wait()
        notebook = _notebook_of(manager, app)
        if notebook is None:
            raise web.HTTPError(404, f"no app {app}")
        loop = asyncio.get_running_loop()
        try:
            requirements = await loop.run_in_executor(
                None, edit_requirements, manager.root / notebook, body.get("add"), body.get("remove")
            )
        except (EnvRequestError, RequirementsEditError) as e:
            raise web.HTTPError(400, str(e)) from None
        except FileNotFoundError:
            raise web.HTTPError(404, f"the notebook of app {app} is gone") from None
        except (ValueError, OSError) as e:  # a notebook half-saved or unreadable now: nothing written
            raise web.HTTPError(409, f"{notebook} cannot be changed now: {type(e).__name__}: {e}"[:500]) from None
        answer: api.RequirementsList = {"app": app, "notebook": notebook, "requirements": requirements}
        self.finish(json.dumps(answer))


def _notebook_of(manager: AppManager, app: str) -> str | None:
    """The notebook of ``app``: the one it is served from, else the one a problem names
    (bad requirements can be fixed through this route too)."""
    known = manager.apps.get(app)
    if known is not None and known.spec is not None and known.status != "stopped":
        return known.spec.notebook
    for problem in manager.problems:
        if problem.name == app:
            return problem.notebook
    return None
