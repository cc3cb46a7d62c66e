"""reco.references.compute_reference_embeddings with stub callables (no networks, no files)."""
import torch
import torch.nn.functional as F

from reco.references import compute_reference_embeddings

CONTEXTS = ["tree", "sky", "building", "road", "person"]


class RecordingCache:
    """In-memory ReferenceCache that records every lookup and store as (name, contexts)."""

    def __init__(self, entries=None):
        self.entries = dict(entries or {})
        self.gets, self.puts = [], []

    def get(self, name, contexts):
        self.gets.append((name, contexts))
        return self.entries.get((name, contexts))

    def put(self, name, contexts, reference):
        self.puts.append((name, contexts))
        self.entries[(name, contexts)] = reference


def stubs():
    """retrieve_images gives 3 random 16x16 images seeded by the name; the encoder average-pools them."""
    retrieved = []

    def retrieve_images(name):
        retrieved.append(name)
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        return torch.randn(3, 3, 16, 16, generator=g)

    def encoder(images):  # (k, 3, 16, 16) -> (k, 3, 4, 4)
        return F.avg_pool2d(images, 4)

    return retrieve_images, encoder, retrieved


def test_each_context_eliminates_only_the_contexts_before_it():
    retrieve_images, encoder, retrieved = stubs()
    cache = RecordingCache()
    compute_reference_embeddings(["car", "bus"], retrieve_images, encoder, context_categories=CONTEXTS,
                                 aliases={}, cache=cache)
    expected = [(name, tuple(CONTEXTS[:i])) for i, name in enumerate(CONTEXTS)]
    expected += [("car", tuple(CONTEXTS)), ("bus", tuple(CONTEXTS))]
    assert cache.puts == expected
    assert retrieved == CONTEXTS + ["car", "bus"]


def test_context_order_changes_the_references_of_later_contexts():
    retrieve_images, encoder, _ = stubs()
    alone = compute_reference_embeddings(["tree", "sky"], retrieve_images, encoder)  # no elimination
    tree_first = compute_reference_embeddings(["tree", "sky"], retrieve_images, encoder, context_categories=["tree", "sky"])
    sky_first = compute_reference_embeddings(["tree", "sky"], retrieve_images, encoder, context_categories=["sky", "tree"])
    # the first context eliminates nothing; the second eliminates the first
    assert torch.equal(tree_first["tree"], alone["tree"]) and not torch.equal(tree_first["sky"], alone["sky"])
    assert torch.equal(sky_first["sky"], alone["sky"]) and not torch.equal(sky_first["tree"], alone["tree"])


def test_alias_and_context_names_reuse_the_context_reference_without_retrieval():
    retrieve_images, encoder, retrieved = stubs()
    computed = []
    references = compute_reference_embeddings(
        ["vegetation", "sky", "car"], retrieve_images, encoder, context_categories=CONTEXTS,
        aliases={"vegetation": "tree"}, on_reference=lambda name, images, similarity: computed.append(name))
    assert list(references) == ["vegetation", "sky", "car"]
    assert "vegetation" not in retrieved and retrieved.count("sky") == 1
    assert "vegetation" not in computed and computed == CONTEXTS + ["car"]
    tree_alone = compute_reference_embeddings(["tree"], retrieve_images, encoder, context_categories=CONTEXTS)
    assert torch.equal(references["vegetation"], tree_alone["tree"])


def test_an_alias_to_a_category_that_is_no_context_is_computed():
    retrieve_images, encoder, retrieved = stubs()
    compute_reference_embeddings(["vegetation"], retrieve_images, encoder, context_categories=["sky"],
                                 aliases={"vegetation": "tree"})
    assert retrieved == ["sky", "vegetation"]


def test_cached_references_are_not_retrieved():
    retrieve_images, encoder, retrieved = stubs()
    cached_car, cached_tree = torch.full((3,), 7.0), torch.full((3,), 5.0)
    cache = RecordingCache({("car", tuple(CONTEXTS)): cached_car, ("tree", ()): cached_tree})
    references = compute_reference_embeddings(["car", "bus"], retrieve_images, encoder,
                                              context_categories=CONTEXTS, cache=cache)
    assert torch.equal(references["car"], cached_car)
    assert "car" not in retrieved and "tree" not in retrieved and "bus" in retrieved
    assert ("car", tuple(CONTEXTS)) not in cache.puts and ("bus", tuple(CONTEXTS)) in cache.puts
