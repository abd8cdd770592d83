from __future__ import annotations

from exporter_api.config import Settings
from tests.exporter_api.conftest import DEMO_LOGIN, app_client


async def test_databases_are_anonymous(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await client.get("/api/catalog/databases")
        assert response.status_code == 200
        assert response.json() == {
            "databases": [
                {
                    "id": "db-test",
                    "displayName": "Test database (SQLite demo)",
                    "provider": "sqlite",
                }
            ]
        }


async def test_streams_are_anonymous(settings: Settings) -> None:
    async with app_client(settings) as client:
        response = await client.get("/api/catalog/streams")
        assert response.status_code == 200
        assert response.json() == {
            "managers": [
                {
                    "id": "m1",
                    "displayName": "Manager 1",
                    "streams": [
                        {"id": "s1", "displayName": "Stream 1"},
                        {"id": "s2", "displayName": "Stream 2"},
                    ],
                },
                {
                    "id": "m2",
                    "displayName": "Manager 2",
                    "streams": [
                        {"id": "s3", "displayName": "Stream 3"},
                    ],
                },
            ]
        }


async def test_scripts_in_the_contract_shape(settings: Settings) -> None:
    async with app_client(settings) as client:
        login = await client.post("/api/auth/login", json=DEMO_LOGIN)
        token = login.json()["accessToken"]
        response = await client.get(
            "/api/catalog/scripts", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"groups", "columnsProfiles"}
        sales = body["groups"][0]
        assert set(sales) == {"id", "displayName", "scripts"}
        assert sales["id"] == "g-sales"
        assert sales["displayName"] == "Sales"
        assert sales["scripts"][0] == {
            "id": "s-orders",
            "displayName": "Orders export",
            "executionLane": 0,
            "columnsProfileId": "orders_cols",
        }
        profiles = {p["id"]: p for p in body["columnsProfiles"]}
        items = profiles["orders_cols"]["items"]
        assert items[:2] == [
            {"id": "order_id", "label": "OrderId"},
            {"id": "customer", "label": "Customer"},
        ]
        assert all(set(i) == {"id", "label"} for p in profiles.values() for i in p["items"])
        assert [g["id"] for g in body["groups"]] == ["g-sales", "g-big"]
