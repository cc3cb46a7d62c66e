"""utils.registry.Registry: the one table behind the benchmark, encoder, CLIP and CRF-backend registries."""
import pytest

from utils.registry import Registry


def test_register_lookup_unregister_in_order():
    table: Registry[int] = Registry("widget", "widget_name", reserved=("auto",))
    table.register("b", 2)
    table.register("a", 1)
    assert table.names() == ("b", "a") and list(table) == ["b", "a"] and len(table) == 2
    assert "a" in table and table["a"] == 1 and table.lookup("b") == 2
    assert table.names(keep=lambda value: value > 1) == ("b",)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        table.register("a", 3)
    assert table.register("a", 3, replace=True) == 3
    with pytest.raises(ValueError, match="widget 'auto' is reserved"):
        table.register("auto", 0)
    with pytest.raises(ValueError, match=r"unknown widget_name 'c'; known: b, a$"):
        table.lookup("c")
    table.unregister("a")
    table.unregister("never-there")
    assert table.names() == ("b",)
