//! The canonical form of XHTML narrative (`text.div`, a string in FHIR
//! JSON, an element tree in FHIR XML).
//!
//! FHIR XML parsers disagree on insignificant narrative whitespace and on
//! how text is escaped (`"` or `&quot;`), so the same narrative would digest
//! differently depending on the wire format it arrived in. The canonical
//! form therefore re-serializes the div: every text node trimmed of leading
//! and trailing whitespace (whitespace-only nodes dropped), text escaped as
//! `&amp; &lt; &gt;`, attribute values as `&amp; &lt; &quot;`, comments and
//! processing instructions dropped, CDATA as text, empty elements as
//! `<name/>`. The trade-off, documented in docs/canonical-form.md: a change
//! that only adds or removes whitespace at the edge of narrative text is not
//! detected; every other narrative change is.

use quick_xml::events::Event;

use crate::Error;

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn xml_error(e: impl std::fmt::Display) -> Error {
    Error::Canonical {
        offset: 0,
        reason: format!("narrative div is not well-formed XHTML: {e}"),
    }
}

/// Canonical narrative XHTML.
pub fn canonical_div(div: &str) -> Result<String, Error> {
    let mut reader = quick_xml::Reader::from_str(div);
    let mut out = String::with_capacity(div.len());
    let mut depth = 0usize;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Eof => break,
            Event::Start(start) => {
                depth += 1;
                write_tag(&start, &mut out)?;
                out.push('>');
            }
            Event::Empty(start) => {
                write_tag(&start, &mut out)?;
                out.push_str("/>");
            }
            Event::End(end) => {
                depth = depth.saturating_sub(1);
                out.push_str("</");
                out.push_str(std::str::from_utf8(end.name().as_ref()).map_err(xml_error)?);
                out.push('>');
            }
            Event::Text(text) => {
                let text = text.unescape().map_err(xml_error)?;
                escape_text(text.trim(), &mut out);
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data).map_err(xml_error)?.to_owned();
                escape_text(text.trim(), &mut out);
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
        }
    }
    if depth != 0 {
        return Err(xml_error("unclosed element"));
    }
    Ok(out)
}

fn write_tag(start: &quick_xml::events::BytesStart<'_>, out: &mut String) -> Result<(), Error> {
    out.push('<');
    out.push_str(std::str::from_utf8(start.name().as_ref()).map_err(xml_error)?);
    for attr in start.attributes() {
        let attr = attr.map_err(xml_error)?;
        out.push(' ');
        out.push_str(std::str::from_utf8(attr.key.as_ref()).map_err(xml_error)?);
        out.push_str("=\"");
        escape_attr(&attr.unescape_value().map_err(xml_error)?, out);
        out.push('"');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrative_table() {
        #[rustfmt::skip]
        let cases = [
            ("<div xmlns=\"http://www.w3.org/1999/xhtml\">\n\t<p>Peter James <b>Chalmers</b> (\"Jim\")</p>\n</div>",
             "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Peter James<b>Chalmers</b>(\"Jim\")</p></div>"),
            ("<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a &amp; b &lt; c</p><br/><!-- x --></div>",
             "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>a &amp; b &lt; c</p><br/></div>"),
            ("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"x?a=1&amp;b=2\">山田</a></div>",
             "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"x?a=1&amp;b=2\">山田</a></div>"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_div(input).unwrap(), want);
        }
        assert!(canonical_div("<div><p></div>").is_err());
    }
}
