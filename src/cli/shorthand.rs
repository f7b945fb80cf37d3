//! The aws CLI's shorthand syntax for structure flags, e.g.
//! `maximumPercent=200,deploymentCircuitBreaker={enable=true,rollback=true}`,
//! turned into JSON. A value that starts with `{` or `[` as a whole is read
//! as JSON instead.

use serde_json::{Map, Value};

/// Parses one structure (`a=1,b={c=d}`) or JSON.
pub fn parse_structure(flag: &str, text: &str) -> anyhow::Result<Value> {
    let trimmed = text.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str(trimmed)
            .map_err(|e| anyhow::anyhow!("{flag}: invalid json: {e}"));
    }
    let mut chars = trimmed.chars().peekable();
    let value = parse_members(flag, &mut chars, false)?;
    if chars.next().is_some() {
        anyhow::bail!("{flag}: unexpected '}}' in {text:?}");
    }
    Ok(value)
}

/// Parses a list of structures separated by spaces, or a JSON list.
pub fn parse_list(flag: &str, text: &str) -> anyhow::Result<Value> {
    let trimmed = text.trim();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed)
            .map_err(|e| anyhow::anyhow!("{flag}: invalid json: {e}"));
    }
    let items = trimmed
        .split_whitespace()
        .map(|item| parse_structure(flag, item))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Value::Array(items))
}

fn parse_members(
    flag: &str,
    chars: &mut std::iter::Peekable<std::str::Chars>,
    nested: bool,
) -> anyhow::Result<Value> {
    let mut map = Map::new();
    loop {
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',' && *c != '}')).collect();
        if key.trim().is_empty() {
            anyhow::bail!("{flag}: expected name=value");
        }
        if chars.next() != Some('=') {
            anyhow::bail!("{flag}: {key:?} needs a value (name=value)");
        }
        let value = if chars.peek() == Some(&'{') {
            chars.next();
            let inner = parse_members(flag, chars, true)?;
            if chars.next() != Some('}') {
                anyhow::bail!("{flag}: missing '}}' after {key}");
            }
            inner
        } else {
            let raw: String =
                std::iter::from_fn(|| chars.next_if(|c| *c != ',' && *c != '}')).collect();
            scalar(raw.trim())
        };
        map.insert(key.trim().to_string(), value);
        match chars.peek() {
            Some(',') => {
                chars.next();
            }
            Some('}') if nested => break,
            None => break,
            Some(other) => anyhow::bail!("{flag}: unexpected {other:?}"),
        }
    }
    Ok(Value::Object(map))
}

fn scalar(raw: &str) -> Value {
    if let Ok(number) = raw.parse::<i64>() {
        return Value::from(number);
    }
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shorthand_and_json() {
        let value = parse_structure(
            "--deployment-configuration",
            "maximumPercent=200,minimumHealthyPercent=50,deploymentCircuitBreaker={enable=true,rollback=false}",
        )
        .unwrap();
        assert_eq!(
            value,
            json!({"maximumPercent": 200, "minimumHealthyPercent": 50, "deploymentCircuitBreaker": {"enable": true, "rollback": false}})
        );
        assert_eq!(parse_structure("x", "{\"a\": 1}").unwrap(), json!({"a": 1}));
        let list = parse_list(
            "--load-balancers",
            "targetGroupArn=tg/web,containerName=web,containerPort=80",
        )
        .unwrap();
        assert_eq!(
            list,
            json!([{"targetGroupArn": "tg/web", "containerName": "web", "containerPort": 80}])
        );
        assert!(parse_structure("x", "a=1,b")
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse_structure("x", "a={b=1").is_err());
    }
}
