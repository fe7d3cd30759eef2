"""An Iterable project in DuckDB, as Dagster assets. `IterableComponent` is its Dagster component
(loaded on first use, so that importing a lower layer, such as the HTTP client, does not load Dagster)."""


def __getattr__(name: str):
    if name == "IterableComponent":
        from iterable_assets.orchestration.component import IterableComponent

        return IterableComponent
    raise AttributeError(f"module 'iterable_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["IterableComponent"]
