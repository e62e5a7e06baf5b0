// MultitaskInputs::from: the model's view of a schema and its fitted encoding. Its own file
// so that code using the model without an encoding does not link the encoding.
#include "tabular/multitask_model.h"

namespace moe::tabular {

MultitaskInputs MultitaskInputs::from(const TabularSchema& s, const TabularEncoding& e) {
    MultitaskInputs in;
    for (int64_t c = 0; c < int64_t(s.categorical.size()); ++c) {
        in.table_rows.push_back(e.table_rows(s, c));
        in.embed_dims.push_back(s.categorical[size_t(c)].embed_dim);
    }
    in.n_numeric = int64_t(s.numeric.size());
    for (const TargetColumn& t : s.targets) {
        in.task_kinds.push_back(t.kind);
        in.task_weights.push_back(t.weight);
        in.task_names.push_back(t.name);
    }
    return in;
}

}  // namespace moe::tabular
