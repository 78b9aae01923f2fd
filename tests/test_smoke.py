"""The spec's three-item example in-process, and a live server's health: the quickest signs of life."""

from spec_data import THREE_ITEMS

from version import VERSION


def test_three_item_example_over_the_test_client(client, bot, registered):
    response = client.post("/api/bots/my-bot/state", json={"states": THREE_ITEMS}, headers={"x-api-key": bot["apiKey"]})
    assert response.status_code == 200
    assert response.get_json()["summary"] == {"total": 3, "succeeded": 2, "failed": 1}


def test_live_server_answers_health(live_server):
    import requests

    assert requests.get(live_server.url + "/healthz", timeout=5).json() == {"status": "ok", "version": VERSION}
