//! `--quant wXaY`: changes the bit widths of every value that follows the file's
//! defaults, so a bit-width sweep needs no edits; explicit `@quant` overrides stay.

use std::str::FromStr;

use crate::ir::{Graph, QuantDefaults, QuantSpec};

/// Weight and activation bit widths from `w4a8`-style text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BitWidths {
    pub weights: u8,
    pub activations: u8,
}

impl FromStr for BitWidths {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not of the form wXaY with X and Y from {} to {} (e.g. w4a8)",
                QuantSpec::MIN_BITS,
                QuantSpec::MAX_BITS
            )
        };
        let rest = s.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let bits = |t: &str| {
            t.parse::<u8>()
                .ok()
                .filter(|b| (QuantSpec::MIN_BITS..=QuantSpec::MAX_BITS).contains(b))
                .ok_or_else(bad)
        };
        Ok(BitWidths {
            weights: bits(w)?,
            activations: bits(a)?,
        })
    }
}

/// Sets the bit widths of all weights and activations whose spec is the file default.
pub fn override_default_bits(graph: &mut Graph, defaults: QuantDefaults, bits: BitWidths) {
    for node in &mut graph.nodes {
        if node.quant.weights == defaults.weights {
            node.quant.weights.bits = bits.weights;
        }
        if node.quant.activations == defaults.activations {
            node.quant.activations.bits = bits.activations;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bit_width_pairs() {
        assert_eq!(
            "w2a8".parse::<BitWidths>(),
            Ok(BitWidths {
                weights: 2,
                activations: 8
            })
        );
        assert!("w9a8".parse::<BitWidths>().is_err());
        assert!("w4".parse::<BitWidths>().is_err());
        assert!("a4w4".parse::<BitWidths>().is_err());
    }
}
