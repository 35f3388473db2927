"""Retrieval over request candidates and over the persisted, version-bound gallery."""

from __future__ import annotations

import base64

from tests.service.conftest import auth, png_bytes
from tests.service.test_admin_swap import upload


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def retrieve(client, tenant="acme", **body):
    return client.post(f"/v1/tenants/{tenant}/retrieve", headers=auth(tenant), json=body)


def test_text_query_ranks_identical_candidate_first(client):
    response = retrieve(
        client, query_text="a red fox", candidate_texts=["a blue car", "a red fox", "snow"], top_k=3
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert hits[0]["index"] == 1
    assert abs(hits[0]["score"] - 1.0) < 1e-4
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


def test_image_query_over_image_candidates(client):
    red, green = png_bytes((250, 0, 0)), png_bytes((0, 250, 0))
    response = retrieve(client, query_image=b64(green), candidate_images=[b64(red), b64(green)], top_k=1)
    assert response.json()["hits"][0]["index"] == 1


def test_query_needs_exactly_one_input(client):
    assert retrieve(client, candidate_texts=["x"]).status_code == 400
    assert (
        retrieve(client, query_text="x", query_image=b64(png_bytes()), candidate_texts=["x"]).status_code
        == 400
    )


def test_gallery_add_list_query_delete(client, store):
    items = [
        {"id": "fox", "text": "a red fox", "metadata": {"sku": 1}},
        {"id": "car", "text": "a blue car"},
        {"id": "green", "image": b64(png_bytes((0, 250, 0)))},
    ]
    response = client.post("/v1/tenants/acme/gallery/items", headers=auth("acme"), json={"items": items})
    assert response.status_code == 201, response.text
    listed = client.get("/v1/tenants/acme/gallery/items", headers=auth("acme")).json()["items"]
    assert [item["id"] for item in listed] == ["fox", "car", "green"]

    hits = retrieve(client, query_text="a red fox").json()
    assert hits["source"] == "gallery"
    assert hits["hits"][0]["id"] == "fox"
    assert hits["hits"][0]["metadata"] == {"sku": 1}
    assert (store / "acme" / "_gallery" / "embeddings" / "v1@0.500000.safetensors").is_file()

    assert client.delete("/v1/tenants/acme/gallery/items/fox", headers=auth("acme")).status_code == 204
    assert all(hit["id"] != "fox" for hit in retrieve(client, query_text="a red fox").json()["hits"])
    assert client.delete("/v1/tenants/acme/gallery/items/fox", headers=auth("acme")).status_code == 404


def test_gallery_reembeds_after_swap(client, adapter_sources, store):
    items = [{"id": "fox", "text": "a red fox"}, {"id": "car", "text": "a blue car"}]
    client.post("/v1/tenants/acme/gallery/items", headers=auth("acme"), json={"items": items})
    before = retrieve(client, query_text="a fox").json()
    assert upload(client, "acme", adapter_sources["acme-v2"], "v2").status_code == 201
    after = retrieve(client, query_text="a fox").json()
    assert after["version"] == "v2"
    assert (store / "acme" / "_gallery" / "embeddings" / "v2@0.500000.safetensors").is_file()
    assert before["hits"][0]["score"] != after["hits"][0]["score"]


def test_gallery_isolated_between_tenants(client):
    client.post("/v1/tenants/acme/gallery/items", headers=auth("acme"), json={"items": [{"text": "secret"}]})
    assert client.get("/v1/tenants/globex/gallery/items", headers=auth("globex")).json()["items"] == []
    assert client.get("/v1/tenants/acme/gallery/items", headers=auth("globex")).status_code == 401
    assert retrieve(client, "globex", query_text="secret").status_code == 404


def test_gallery_rejects_bad_items(client):
    bad = [{"text": "x", "image": b64(png_bytes())}]
    assert (
        client.post("/v1/tenants/acme/gallery/items", headers=auth("acme"), json={"items": bad}).status_code
        == 400
    )
    broken = [{"image": b64(b"not an image")}]
    response = client.post("/v1/tenants/acme/gallery/items", headers=auth("acme"), json={"items": broken})
    assert response.status_code == 400
    assert client.get("/v1/tenants/acme/gallery/items", headers=auth("acme")).json()["items"] == []


def test_empty_candidates_return_no_hits(client):
    queries = {"query_text": "a red fox", "query_image": b64(png_bytes())}
    for query_field, query in queries.items():
        for candidate_field in ("candidate_texts", "candidate_images"):
            response = retrieve(client, **{query_field: query, candidate_field: []})
            case = f"{query_field} over empty {candidate_field}"
            assert response.status_code == 200, f"{case}: {response.text}"
            assert response.json()["hits"] == [], case
            assert response.json()["source"] == "candidates", case
