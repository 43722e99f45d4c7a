"""Where a run's data comes from when nobody names a folder: the registry and the object store.

After one train-and-deploy the registry entry records the object-store URI the data was synced to
(`data_uri`), its manifest hash, and the local folder it came from (`data_dir`). A retrain with no
parameters then trains on what is under that URI *now*: images someone added under the data
prefix (with `aws s3 cp`, or into the local store folder) are picked up, because the manifest is
recomputed from a listing of the prefix. That recomputed manifest is only hashed (it names the
data for the run key and the registry), never written over the sync's own `_manifest.json`, so a
later sync from the original folder still deletes only what an earlier sync put there.
`resync=True` syncs the recorded folder again instead, as train-and-deploy does.
"""

from __future__ import annotations

from dogops.errors import UserInputError
from dogops.registry import Registry, RegistryEntry


def last_entry(registry: Registry, endpoint_name: str) -> RegistryEntry | None:
    """The endpoint's live entry, else its most recent one (None before any train-and-deploy)."""
    live = registry.live(endpoint_name)
    if live is not None:
        return live
    history = registry.history(endpoint_name)
    return history[-1] if history else None


def require_entry(registry: Registry, endpoint_name: str, what: str) -> RegistryEntry:
    """`last_entry`, or an error that names the fix: there has never been a train-and-deploy."""
    entry = last_entry(registry, endpoint_name)
    if entry is None or not entry.data_uri:
        raise UserInputError(
            f"{what} needs data, and none was given: the registry {registry.uri} has no model "
            f"with recorded data for endpoint {endpoint_name}. Run train-and-deploy first "
            "(`dogops run --data-dir FOLDER`, or the train-and-deploy deployment with data_dir), "
            "or pass data_dir."
        )
    return entry
