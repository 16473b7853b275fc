"""Client groups: how a client id becomes a TensorBoard run directory and tag.

The rules are Tensorplex's, so existing dashboards keep working:

=========  ==================  ============================  =================================
kind       client id           run directory                 ``add_scalar("reward")`` tag
=========  ==================  ============================  =================================
normal     ``learner/system``  ``learner``                   ``system/reward``
indexed 8  ``agent/17``        ``agent/17``                  ``agent/reward/16-23``
combined   ``eval/stoch-1``    ``eval/stoch-1``              ``eval/reward/<bin_fn("stoch-1")>``
=========  ==================  ============================  =================================

In a tag, ``:`` and ``#`` become ``.``; a tag starting with ``.`` is glued on without a
``/`` (a TensorBoard section of its own); a leading ``/`` behaves like no prefix.

Example:
    >>> registry = GroupRegistry().with_group(GroupSpec.indexed("agent", 8))
    >>> route = registry.route("agent/17")
    >>> route.run, route.tag("reward")
    ('agent/17', 'agent/reward/16-23')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rayplex.rules import split_client_id as split_client_id  # re-exported for older imports
from rayplex.rules import validate_group_name
from rayplex.rules import validate_tag as validate_tag  # re-exported for older imports

NORMAL = "normal"
INDEXED = "indexed"
COMBINED = "combined"

SUMMARY_RUN = "summary"
"""Name of the run, inside each group's directory, that holds cluster-wide summaries."""


def bin_for(index: int, bin_size: int) -> str:
    """Name the bin of an indexed group's member: ``16-23`` for 17 with size 8, ``3`` for size 1.

    Example:
        >>> bin_for(17, 8), bin_for(3, 1)
        ('16-23', '3')
    """
    lo = index // bin_size * bin_size
    hi = lo + bin_size - 1
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _clean(tag: str) -> str:
    return tag.replace(":", ".").replace("#", ".")


def _join(prefix: str, tag: str) -> str:
    # Tensorplex: '.' and '/' at the start glue on directly; '.x' opens a section of its own.
    return prefix + tag if tag[0] in "./" else prefix + "/" + tag


@dataclass(frozen=True)
class GroupSpec:
    """How the clients of one group are laid out in TensorBoard.

    Example:
        >>> GroupSpec.indexed("agent", 8).bin_size
        8
        >>> GroupSpec.normal("hparams")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: group name 'hparams' is reserved for rayplex's own use ...

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if ``name`` breaks :func:`rayplex.rules.validate_group_name` (also the
            reserved ``hparams``, ``rayplex``, ``system`` and ``all.log*``).
    """

    name: str
    kind: str = NORMAL
    bin_size: int = 1
    bin_fn: Callable[[str], str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        validate_group_name(self.name)

    @classmethod
    def normal(cls, name: str) -> GroupSpec:
        return cls(name, NORMAL)

    @classmethod
    def indexed(cls, name: str, bin_size: int) -> GroupSpec:
        if isinstance(bin_size, bool) or not isinstance(bin_size, int):
            raise TypeError(f"bin_size must be an int, got {type(bin_size).__name__}")
        if bin_size < 1:
            raise ValueError(f"bin_size must be >= 1, got {bin_size}")
        return cls(name, INDEXED, bin_size)

    @classmethod
    def combined(cls, name: str, bin_fn: Callable[[str], str]) -> GroupSpec:
        if not callable(bin_fn):
            raise TypeError(f"bin_fn must be callable (name -> bin name), got {bin_fn!r}")
        return cls(name, COMBINED, 1, bin_fn)


@dataclass(frozen=True)
class Route:
    """Where one client's records go: a run directory and a tag prefix/suffix."""

    client_id: str
    run: str
    prefix: str
    suffix: str
    registered: bool

    def tag(self, user_tag: str) -> str:
        """The TensorBoard tag for ``user_tag`` logged by this client."""
        if not self.prefix:  # a group's summary run: the key/stat tag as given
            return _clean(user_tag) + self.suffix
        return _join(self.prefix, _clean(user_tag)) + self.suffix


@dataclass(frozen=True)
class GroupRegistry:
    """An immutable snapshot of the registered groups; ``version`` grows with each change."""

    groups: Mapping[str, GroupSpec] = field(default_factory=dict)
    version: int = 0
    epoch: str = ""
    """Identifies the experiment that owns this registry, so versions of two hubs never mix."""

    def with_group(self, spec: GroupSpec) -> GroupRegistry:
        """A new registry with ``spec`` added (or replacing the group of that name).

        Raises:
            ValueError: if the spec's name is not a valid group name (checked again here: the
                hub calls this with specs that arrive pickled).
        """
        validate_group_name(spec.name)
        groups = dict(self.groups)
        groups[spec.name] = spec
        return GroupRegistry(groups, self.version + 1, self.epoch)

    @property
    def stamp(self) -> tuple[str, int]:
        """``(epoch, version)``: equal stamps route identically."""
        return (self.epoch, self.version)

    def check_client(self, client_id: str) -> tuple[str, str]:
        """Validate a user's ``client_id`` against the registered groups.

        In an indexed group the name must be a non-negative integer written without leading
        zeros: ``agent/007`` and ``agent/7`` would otherwise share one run and one tag.

        Example:
            >>> registry = GroupRegistry().with_group(GroupSpec.indexed("agent", 8))
            >>> registry.check_client("agent/007")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: client id 'agent/007': ... use the canonical id 'agent/7'

        Raises:
            TypeError: if ``client_id`` is not a str.
            ValueError: if :func:`rayplex.rules.split_client_id` refuses it, or its group is
                indexed and the name is not a canonical non-negative integer.
        """
        group, name = split_client_id(client_id)
        spec = self.groups.get(group)
        if spec is not None and spec.kind == INDEXED:
            if not name.isdigit():
                raise ValueError(
                    f"client id {client_id!r}: group {group!r} is indexed, so the name must be a "
                    "non-negative integer like 'agent/3'"
                )
            canonical = str(int(name))
            if canonical != name:
                raise ValueError(
                    f"client id {client_id!r}: group {group!r} is indexed and this is index "
                    f"{canonical}; use the canonical id '{group}/{canonical}'"
                )
        return group, name

    def summary_route(self, group: str) -> Route:
        """Where the hub writes a group's ``store_metrics`` summaries: run
        ``<group>/summary``, tags ``<key>/<stat>`` as given.

        Example:
            >>> GroupRegistry().summary_route("agent").run
            'agent/summary'
        """
        return Route(f"{group}/{SUMMARY_RUN}", f"{group}/{SUMMARY_RUN}", "", "", True)

    def route(self, client_id: str) -> Route:
        """Route ``client_id``; an unregistered group routes like a normal group.

        Raises:
            ValueError: for an invalid client id, or if a combined group's ``bin_fn`` fails or
                returns something that is not a non-empty string.
        """
        group, name = self.check_client(client_id)
        spec = self.groups.get(group)
        if spec is None or spec.kind == NORMAL:
            return Route(client_id, group, name, "", spec is not None)
        if spec.kind == INDEXED:
            index = int(name)
            return Route(client_id, f"{group}/{index}", group, "/" + bin_for(index, spec.bin_size), True)
        if spec.bin_fn is None:  # restored after a hub restart: the driver re-registers it
            return Route(client_id, f"{group}/{name}", group, "/" + _clean(name), True)
        try:
            bin_name = spec.bin_fn(name)
        except Exception as exc:
            raise ValueError(
                f"bin_fn of combined group {group!r} raised {exc!r} for name {name!r}; it must "
                "map a client name to a bin name"
            ) from exc
        if not isinstance(bin_name, str) or not bin_name or "\x00" in bin_name:
            raise ValueError(
                f"bin_fn of combined group {group!r} returned {bin_name!r} for {name!r}; "
                "expected a non-empty str"
            )
        return Route(client_id, f"{group}/{name}", group, "/" + _clean(bin_name), True)


REGISTRY_FORMAT = "rayplex-registry"
_REGISTRY_VERSION = 1


# --------------------------------------------------------- the registry as JSON
def registry_to_json(registry: GroupRegistry) -> dict[str, Any]:
    """The registry as a JSON object; a combined group's ``bin_fn`` is left out.

    Example:
        >>> data = registry_to_json(GroupRegistry(epoch="e").with_group(GroupSpec.normal("learner")))
        >>> data["version"], data["groups"]
        (1, [{'name': 'learner', 'kind': 'normal', 'bin_size': 1}])
    """
    return {
        "format": REGISTRY_FORMAT,
        "v": _REGISTRY_VERSION,
        "epoch": registry.epoch,
        "version": registry.version,
        "groups": [{"name": spec.name, "kind": spec.kind, "bin_size": spec.bin_size}
                   for spec in registry.groups.values()],
    }


def registry_from_json(data: object) -> GroupRegistry:
    """Rebuild a registry from :func:`registry_to_json` output, checking every field.

    A combined group comes back with ``bin_fn=None`` (clients binned by their own name) and the
    same version: this is an exact codec; :func:`load_registry` bumps the version.

    Raises:
        ValueError: if ``data`` is not a well-formed registry of this format and version.
    """
    if not isinstance(data, dict) or data.get("format") != REGISTRY_FORMAT:
        raise ValueError("not a rayplex registry (no 'format': 'rayplex-registry')")
    if data.get("v") != _REGISTRY_VERSION:
        raise ValueError(f"unsupported registry format version {data.get('v')!r:.40}")
    epoch, version, groups = data.get("epoch"), data.get("version"), data.get("groups")
    if not isinstance(epoch, str) or len(epoch) > 256:
        raise ValueError("registry epoch must be a short string")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError("registry version must be a non-negative int")
    if not isinstance(groups, list):
        raise ValueError("registry groups must be a list")
    specs: dict[str, GroupSpec] = {}
    for item in groups:
        if not isinstance(item, dict):
            raise ValueError("a registry group must be an object")
        try:
            name = validate_group_name(item.get("name"), internal=True)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        kind, bin_size = item.get("kind"), item.get("bin_size")
        if kind not in (NORMAL, INDEXED, COMBINED):
            raise ValueError(f"group {name!r}: unknown kind {kind!r:.40}")
        if (not isinstance(bin_size, int) or isinstance(bin_size, bool) or bin_size < 1
                or (kind != INDEXED and bin_size != 1)):
            raise ValueError(f"group {name!r}: bad bin_size {bin_size!r:.40}")
        specs[name] = GroupSpec(name, kind, bin_size, None)
    return GroupRegistry(specs, version, epoch)
