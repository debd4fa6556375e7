//! Finds the line of a component or field in the YAML text, for error messages.
//!
//! serde_yaml cannot report positions once a component is dispatched on its `type`, so this
//! scans the text: the component is the first indented `id:` key under its top-level section,
//! a field the first `name:` key inside the component's block. Block-style YAML (what users
//! write) is located exactly; flow style falls back to the component's line.

/// 1-based line of `section.id`, if found.
pub fn component_line(text: &str, section: &str, id: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| is_key(l, section) && indent(l) == 0)?;
    for (offset, line) in lines[start + 1..].iter().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) == 0 {
            return None;
        }
        if is_key(line, id) {
            return Some(start + offset + 2);
        }
    }
    None
}

/// 1-based line of a (possibly nested) field inside the component at `component_line`.
pub fn field_line(text: &str, component_line: usize, field_path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let header = lines.get(component_line.checked_sub(1)?)?;
    let base = indent(header);
    let mut found = component_line;
    let mut line_index = component_line;
    for field in field_path {
        let mut hit = None;
        for (offset, line) in lines[line_index..].iter().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            if indent(line) <= base {
                break;
            }
            if is_key(line, field) {
                hit = Some(line_index + offset + 1);
                break;
            }
        }
        match hit {
            Some(line) => {
                found = line;
                line_index = line;
            }
            None => break,
        }
    }
    Some(found)
}

/// 1-based lines of the items (`- `) of the block list under a top-level key, in order.
pub fn list_item_lines(text: &str, key: &str) -> Vec<usize> {
    let Some(start) = top_level_line(text, key) else {
        return Vec::new();
    };
    let mut items = Vec::new();
    let mut item_indent = None;
    for (offset, line) in text.lines().skip(start).enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if indent(line) == 0 && !line.starts_with("- ") {
            break;
        }
        if line.trim_start().starts_with("- ") || line.trim() == "-" {
            let at = indent(line);
            if *item_indent.get_or_insert(at) == at {
                items.push(start + offset + 1);
            }
        }
    }
    items
}

/// 1-based line of a top-level key, if found.
pub fn top_level_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| indent(line) == 0 && is_key(line, key))
        .map(|index| index + 1)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn is_key(line: &str, key: &str) -> bool {
    let trimmed = line.trim_start().trim_start_matches("- ");
    [
        format!("{key}:"),
        format!("\"{key}\":"),
        format!("'{key}':"),
    ]
    .iter()
    .any(|k| trimmed.starts_with(k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "sources:\n  a:\n    type: stdin\n  b:\n    type: file\n    include: [x]\n    max_line_bytes: x\nsinks:\n  b:\n    type: console\n";

    #[test]
    fn finds_components_in_their_own_section() {
        assert_eq!(component_line(TEXT, "sources", "b"), Some(4));
        assert_eq!(component_line(TEXT, "sinks", "b"), Some(9));
        assert_eq!(component_line(TEXT, "transforms", "b"), None);
    }

    #[test]
    fn finds_the_items_of_a_top_level_list() {
        let text =
            "sources: {}\ntests:\n  - name: a\n    inputs:\n      - x\n  - name: b\nsinks: {}\n";
        assert_eq!(list_item_lines(text, "tests"), vec![3, 6]);
        assert_eq!(list_item_lines(text, "other"), Vec::<usize>::new());
    }

    #[test]
    fn finds_fields_inside_the_component_block() {
        assert_eq!(field_line(TEXT, 4, &["max_line_bytes"]), Some(7));
        assert_eq!(
            field_line(TEXT, 2, &["include"]),
            Some(2),
            "not in a's block"
        );
    }
}
