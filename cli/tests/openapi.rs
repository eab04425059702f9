//! The OpenAPI document the gateway serves names exactly the routes the services have,
//! with the roles each admits: a route added without documenting it (or the reverse)
//! fails here.

use std::collections::BTreeMap;

use paystream_http::Access;
use paystream_http::access::RouteAccess;

fn documented() -> BTreeMap<(String, String), String> {
    let document: serde_json::Value = serde_json::from_str(paystream_edge::gateway::OPENAPI_DOCUMENT).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let mut routes = BTreeMap::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let access = operation["x-paystream-access"].as_str().unwrap().to_string();
            assert_eq!(operation.get("security").is_none(), access == "public", "{method} {path}");
            routes.insert((method.to_uppercase(), path.clone()), access);
        }
    }
    routes
}

fn access_text(route: &RouteAccess) -> String {
    match route.access {
        Access::Public => "public".to_string(),
        Access::Roles(roles) => roles.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(", "),
    }
}

#[test]
fn the_document_names_every_route_and_its_roles() {
    let mut served = BTreeMap::new();
    let tables =
        [paystream_auth::routes::routes().table().to_vec(), paystream_payments::routes::routes().table().to_vec()];
    for route in tables.iter().flatten() {
        served.insert((route.method.to_string(), route.path.to_string()), access_text(route));
    }
    served.insert(("GET".to_string(), "/openapi.json".to_string()), "public".to_string());
    assert_eq!(documented(), served);
}
