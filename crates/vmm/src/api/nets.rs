//! `PUT /vm/nets`: plug a NIC into the running VM. The body is a `--net` device as in the
//! JSON config (`{"tap": "vif1.0", "mac": "52:54:00:12:34:56"}`, rate limits optional);
//! the guest is told through ACPI PCI hot-plug. Parsing is pure, like the rest of `http`.

use super::http::{Request, RouteError};
use super::VmmAction;
use crate::config::NetConfig;

pub const PATH: &str = "/vm/nets";

/// `/vm/nets/<id>/remove`.
pub const PREFIX: &str = "/vm/nets/";

pub fn parse(request: &Request) -> Result<VmmAction, RouteError> {
    if let Some(rest) = request.path.strip_prefix(PREFIX) {
        let not_found = || RouteError::NotFound(request.path.chars().take(64).collect());
        let id = rest.strip_suffix("/remove").ok_or_else(not_found)?;
        if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(not_found());
        }
        if request.method != "PUT" {
            return Err(RouteError::MethodNotAllowed {
                method: request.method.clone(),
                allow: "PUT",
            });
        }
        super::http::check_body(&request.body)?;
        return Ok(VmmAction::RemoveNet { id: id.to_owned() });
    }
    if request.method != "PUT" {
        return Err(RouteError::MethodNotAllowed {
            method: request.method.clone(),
            allow: "PUT",
        });
    }
    let bad = |why: String| {
        RouteError::BadBody(format!("the body must be a --net device as in the JSON config, {{\"tap\": NAME, \"mac\": MAC}}: {why}"))
    };
    if request.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad("not a JSON object".into()));
    }
    let net: NetConfig = serde_json::from_slice(&request.body).map_err(|e| bad(e.to_string()))?;
    net.validate().map_err(|e| bad(e.to_string()))?;
    Ok(VmmAction::AddNet(net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, body: &str) -> Request {
        at(method, PATH, body)
    }

    fn at(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            keep_alive: true,
        }
    }

    #[test]
    fn bodies() {
        let Ok(VmmAction::AddNet(net)) = parse(&req(
            "PUT",
            r#"{"tap": "vif1.0", "mac": "52:54:00:12:34:56"}"#,
        )) else {
            panic!()
        };
        assert_eq!(net.tap, "vif1.0");
        assert_eq!(net.mac.unwrap().to_string(), "52:54:00:12:34:56");
        for (method, body, status) in [
            ("GET", "", 405),
            ("PUT", "", 400),
            ("PUT", "[]", 400),
            ("PUT", r#"{"tap": ""}"#, 400),
            ("PUT", r#"{"tap": "a-name-much-too-long"}"#, 400),
            ("PUT", r#"{"tap": "t0", "mac": "ff:ff:ff:ff:ff:ff"}"#, 400),
            ("PUT", r#"{"tap": "t0", "rx_ops_per_sec": 0}"#, 400),
            ("PUT", r#"{"tap": "t0", "colour": "blue"}"#, 400),
        ] {
            let e = parse(&req(method, body)).unwrap_err();
            assert_eq!(e.status(), status, "{method} {body}: {e}");
        }
    }

    #[test]
    fn removal() {
        assert_eq!(
            parse(&at("PUT", "/vm/nets/net1/remove", "")).unwrap(),
            VmmAction::RemoveNet { id: "net1".into() }
        );
        for (method, path, body, status) in [
            ("GET", "/vm/nets/net1/remove", "", 405),
            ("PUT", "/vm/nets/net1", "", 404),
            ("PUT", "/vm/nets//remove", "", 404),
            ("PUT", "/vm/nets/../remove", "", 404),
            ("PUT", "/vm/nets/net1/remove", r#"{"now": true}"#, 400),
        ] {
            let e = parse(&at(method, path, body)).unwrap_err();
            assert_eq!(e.status(), status, "{method} {path}: {e}");
        }
    }
}
