//! Every shader of the crate, one line each. Registering a shader here lets `Gpu::from_wgpu`
//! check the adapter's limits against what its kernels need (read from the WGSL), and puts
//! it under the test that every shader composes and validates.

use crate::runtime::pipelines::Shader;
use crate::{ops, primitives};

pub(crate) const SHADERS: &[&Shader] = &[
    &primitives::colsum::SHADER,
    &primitives::rowstat::SHADER,
    &primitives::rowtile::SHADER,
    &primitives::rowstream::SHADER,
    &ops::blas::SHADER,
    &ops::content::SHADER,
    &ops::copy::SHADER,
    &ops::discrete::SHADER,
    &ops::location::SHADER,
    &ops::read::SHADER,
    &ops::sample::SHADER,
    &ops::write::SHADER,
];

#[cfg(test)]
mod tests {
    use super::SHADERS;
    use crate::runtime::abi::HG;
    use crate::runtime::pipelines::{compose, reflect_all};
    use crate::MAX_ELEMENTWISE_ROWS;

    /// Every shader composes behind the prelude and its imports and passes naga's validation
    /// in every specialisation (lanes, ACC, SUB_ROWS, head counts, rows per elementwise thread
    /// and their load groups, and each memory slot's storage form); every entry point's
    /// bindings are derived without error.
    #[test]
    fn every_shader_composes_and_validates() {
        use crate::runtime::pipelines::{Form, Spec};
        let forms = [Form::F32, Form::F16, Form::Packed];
        for s in SHADERS {
            for lanes in [1, 2, 4] {
                for (acc, sub_rows, heads, ew_rows, row_group) in [
                    (false, false, 0, 1, 1),
                    (true, false, 1, 4, 4),
                    (false, true, 3, 2, 4),
                    (true, true, HG, MAX_ELEMENTWISE_ROWS, 1),
                    (false, false, 2, MAX_ELEMENTWISE_ROWS, 4),
                    (true, true, 1, 1, 3),
                    (false, true, 0, 1, 2),
                ] {
                    for (m, g, d) in forms
                        .iter()
                        .flat_map(|&m| forms.iter().flat_map(move |&g| forms.map(|d| (m, g, d))))
                    {
                        let spec = Spec {
                            lanes,
                            acc,
                            forms: [m, g, d],
                            sub_rows,
                            heads,
                            ew_rows,
                            row_group,
                        };
                        let (src, _) = compose(s, spec);
                        let eps = reflect_all(&src)
                            .unwrap_or_else(|e| panic!("{} ({spec:?}): {e}", s.name));
                        assert!(!eps.is_empty(), "{}: no compute entry point", s.name);
                    }
                }
            }
        }
    }
}
