"""Every route of the portal, from the URL resolver, for the security tests that must cover all
of them (CSRF, isolation, pages under the CSP): a new route is covered, or named, or the
test fails."""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RegexPattern, RoutePattern


@dataclass(frozen=True)
class Route:
    pattern: str  # the full pattern as the resolver prints it, e.g. "keys/<int:key_id>/revoke"
    name: str | None
    view: str  # dotted path of the callback, for messages
    params: tuple[str, ...]  # captured names, in order

    def path(self, values: dict[str, object] | None = None) -> str:
        """A concrete URL path, with each captured name replaced by values[name]."""
        values = values or {}
        missing = [name for name in self.params if name not in values]
        if missing:
            raise KeyError(f"{self.pattern}: no value for {missing}")
        text = self.pattern
        for name in self.params:
            text = _replace_capture(text, name, str(values[name]))
        return "/" + text.replace("^", "").replace("$", "")


def _replace_capture(text: str, name: str, value: str) -> str:
    start = text.find(f"(?P<{name}>")
    if start < 0:  # a path converter: <int:name>, <path:name>, <name>
        for converter in ("int:", "str:", "path:", "slug:", "uuid:", ""):
            token = f"<{converter}{name}>"
            if token in text:
                return text.replace(token, value, 1)
        raise KeyError(f"{name} not in {text}")
    depth, index = 0, start
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[:start] + value + text[index + 1 :]
        index += 1
    raise ValueError(f"unbalanced group in {text}")


def _params(pattern) -> tuple[str, ...]:
    if isinstance(pattern, RoutePattern):
        return tuple(pattern.converters)
    if isinstance(pattern, RegexPattern):
        return tuple(pattern.regex.groupindex)
    return ()


def _walk(resolver: URLResolver, prefix: str, params: tuple[str, ...]):
    for entry in resolver.url_patterns:
        here = prefix + str(entry.pattern)
        captured = params + _params(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry, here, captured)
        elif isinstance(entry, URLPattern):
            callback = entry.callback
            view = f"{getattr(callback, '__module__', '?')}.{getattr(callback, '__name__', '?')}"
            yield Route(pattern=here, name=entry.name, view=view, params=captured)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver(), "", ()))
