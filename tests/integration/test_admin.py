"""Admin round trips: what is created can be read back, pages, policies, prices."""

from tests.helpers import rate_limit, tenant
from warden.v1 import admin_pb2, types_pb2


async def test_orgs_page_through_in_id_order(client):
    for i in range(5):
        await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org(id=f"o{i}")),
                                     metadata=client.auth)
    seen, token = [], ""
    while True:
        page = await client.admin.ListOrgs(admin_pb2.ListOrgsRequest(page_size=2,
                                                                     page_token=token),
                                           metadata=client.auth)
        seen += [o.id for o in page.orgs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"o{i}" for i in range(5)]
    org = await client.admin.GetOrg(admin_pb2.GetOrgRequest(id="o3"), metadata=client.auth)
    assert (org.org.time_zone, org.org.currency) == ("UTC", "USD")


async def test_generated_ids_and_key_listing(client):
    org = await client.admin.CreateOrg(admin_pb2.CreateOrgRequest(org=admin_pb2.Org()),
                                       metadata=client.auth)
    assert org.org.id.startswith("org_")
    app = await client.admin.CreateApp(admin_pb2.CreateAppRequest(
        app=admin_pb2.App(org_id=org.org.id, display_name="Bot")), metadata=client.auth)
    created = await client.admin.CreateApiKey(admin_pb2.CreateApiKeyRequest(
        app_id=app.app.id, display_name="ci"), metadata=client.auth)
    assert created.plaintext.startswith(created.api_key.prefix + "_")
    listed = await client.admin.ListApiKeys(admin_pb2.ListApiKeysRequest(app_id=app.app.id),
                                            metadata=client.auth)
    assert [k.id for k in listed.api_keys] == [created.api_key.id]
    assert listed.api_keys[0].org_id == org.org.id


async def test_policy_round_trip_and_delete(client):
    await tenant(client)
    created = await rate_limit(client, types_pb2.SCOPE_KIND_ORG, "acme", 7, policy_id="p1")
    got = await client.admin.GetPolicy(admin_pb2.GetPolicyRequest(id="p1"), metadata=client.auth)
    assert got.policy == created
    assert got.policy.rate_limit.limit == 7 and got.policy.revision == 1
    assert got.policy.failure_mode == types_pb2.FAILURE_MODE_FAIL_OPEN  # a rate limit's default
    scoped = await client.admin.ListPolicies(admin_pb2.ListPoliciesRequest(
        scope=types_pb2.Scope(kind=types_pb2.SCOPE_KIND_APP, id="chat")), metadata=client.auth)
    assert list(scoped.policies) == []
    await client.admin.DeletePolicy(admin_pb2.DeletePolicyRequest(id="p1"), metadata=client.auth)
    listed = await client.admin.ListPolicies(admin_pb2.ListPoliciesRequest(), metadata=client.auth)
    assert list(listed.policies) == []


async def test_prices_upsert(client):
    for out in (1, 2):
        await client.admin.SetModelPrice(admin_pb2.SetModelPriceRequest(
            price=admin_pb2.ModelPrice(provider="openai", model="m",
                                       output_micros_per_million=out)), metadata=client.auth)
    prices = await client.admin.ListModelPrices(admin_pb2.ListModelPricesRequest(),
                                                metadata=client.auth)
    assert [(p.model, p.output_micros_per_million) for p in prices.prices] == [("m", 2)]
