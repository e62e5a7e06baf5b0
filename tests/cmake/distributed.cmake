# `mpirun -np R moe train` against one process on the language recipe (50 steps each),
# plus checkpoints saved by either resuming identically on both: scripts/distributed_check.py.
#   - train.reduction_groups=4 (canonical gradient sums): every step's loss equal to 1e-12
#     (only the final sum of the reported loss differs), the routing identical at all 50
#     steps, and the final checkpoints bit-identical tensor by tensor (optimizer state
#     included), on 2 and on 4 ranks; on 2 ranks also with noisy_topk and router jitter,
#     whose noise is drawn by global token index;
#   - plain sums (reduction_groups=1): the MoE recipe agrees to 1e-4 while both runs route
#     every batch identically (top-k routing is discontinuous, see the script), the dense
#     variant at every step; both final checkpoints' validation losses agree to 1e-4 if
#     routing never parted, else to 1e-2 (the runs then go their own ways).
if(MPIEXEC_EXECUTABLE)
  set(_check ${PROJECT_SOURCE_DIR}/scripts/distributed_check.py)
  set(_run --moe $<TARGET_FILE:moe_cli> --mpirun ${MPIEXEC_EXECUTABLE}
           "--mpirun-flags=--allow-run-as-root --oversubscribe")
  foreach(np 2 4)
    add_test(NAME mpi.train_lm_matches_single_process.np${np}
             COMMAND python3 ${_check} ${_run} --ranks ${np} --tol 1e-12 --min-same-steps 50
                     --bitwise-checkpoints --set train.reduction_groups=4
                     --out ${CMAKE_BINARY_DIR}/distributed_np${np})
  endforeach()
  add_test(NAME mpi.train_lm_noisy_router_matches_single_process.np2
           COMMAND python3 ${_check} ${_run} --ranks 2 --tol 1e-12 --min-same-steps 50
                   --resume-steps 3 --bitwise-checkpoints --set train.reduction_groups=4
                   --set "moe.router=\"noisy_topk\"" --set moe.jitter=0.1
                   --out ${CMAKE_BINARY_DIR}/distributed_noisy_np2)
  add_test(NAME mpi.train_lm_plain_sums_until_routing_differs.np2
           COMMAND python3 ${_check} ${_run} --ranks 2 --resume-steps 3
                   --out ${CMAKE_BINARY_DIR}/distributed_plain_np2)
  add_test(NAME mpi.train_lm_dense_plain_sums.np2
           COMMAND python3 ${_check} ${_run} --ranks 2 --resume-steps 3 --min-same-steps 50
                   --set "model.ffn=\"dense\"" --out ${CMAKE_BINARY_DIR}/distributed_dense_np2)
  set_tests_properties(mpi.train_lm_matches_single_process.np2
                       mpi.train_lm_matches_single_process.np4
                       mpi.train_lm_noisy_router_matches_single_process.np2
                       mpi.train_lm_plain_sums_until_routing_differs.np2
                       mpi.train_lm_dense_plain_sums.np2
                       PROPERTIES TIMEOUT 900 RUN_SERIAL TRUE)
  # An image classifier (the vision recipe, narrowed to run in seconds) on 2 ranks: each rank
  # takes half the images of a batch and half the experts. Plain sums (vision models refuse
  # reduction_groups), so losses agree to rounding, not bits: 1e-3 relative over 10 steps.
  add_test(NAME mpi.train_vision_matches_single_process.np2
           COMMAND python3 ${_check} ${_run} --ranks 2 --steps 10 --resume-steps 3 --tol 1e-3
                   --min-same-steps 10 --eval-tol-parted 1e-3
                   --config ${PROJECT_SOURCE_DIR}/recipes/vision/conv_moe.json
                   --set "model.conv_channels=[8, 16]" --set model.d_model=32
                   --set moe.d_expert=32 --set train.batch_size=32 --set data.val_count=500
                   --set train.warmup_steps=2
                   --out ${CMAKE_BINARY_DIR}/distributed_vision_np2)
  set_tests_properties(mpi.train_vision_matches_single_process.np2
                       PROPERTIES TIMEOUT 900 RUN_SERIAL TRUE)
  # A multi-task model (MMoE on the synthetic two-task data, made first by moe
  # make-synthetic) on 2 ranks: each rank takes half the rows of a batch (data parallel).
  set(_mt_data ${CMAKE_BINARY_DIR}/distributed_multitask_data)
  add_test(NAME mpi.multitask_data
           COMMAND $<TARGET_FILE:moe_cli> make-synthetic --correlation 0.5 --rows 2000
                   --val-rows 500 --test-rows 500 --out ${_mt_data})
  set_tests_properties(mpi.multitask_data PROPERTIES FIXTURES_SETUP mpi_multitask_data
                       TIMEOUT 120)
  add_test(NAME mpi.train_multitask_matches_single_process.np2
           COMMAND python3 ${_check} ${_run} --ranks 2 --steps 10 --resume-steps 3 --tol 1e-3
                   --min-same-steps 10 --eval-tol-parted 1e-3
                   --config ${PROJECT_SOURCE_DIR}/recipes/multitask/synthetic.json
                   --set "data.train=\"${_mt_data}/train.csv\""
                   --set "data.val=\"${_mt_data}/val.csv\""
                   --set "data.test=\"${_mt_data}/test.csv\"" --set train.warmup_steps=2
                   --out ${CMAKE_BINARY_DIR}/distributed_multitask_np2)
  set_tests_properties(mpi.train_multitask_matches_single_process.np2 PROPERTIES
                       FIXTURES_REQUIRED mpi_multitask_data TIMEOUT 600 RUN_SERIAL TRUE)
  # moe.n_experts not divisible by the ranks: an error naming both before any step runs.
  add_test(NAME mpi.train_lm_experts_not_divisible.np2
           COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe -np 2
                   $<TARGET_FILE:moe_cli> train ${PROJECT_SOURCE_DIR}/recipes/lm/moe_fortunes.json
                   --set moe.n_experts=3 --set moe.top_k=1
                   --set "out_dir=\"${CMAKE_BINARY_DIR}/distributed_bad_experts\"")
  set_tests_properties(mpi.train_lm_experts_not_divisible.np2 PROPERTIES
    PASS_REGULAR_EXPRESSION "moe.n_experts = 3 is not divisible by the number of ranks \\(2\\)"
    FAIL_REGULAR_EXPRESSION "step +1/" TIMEOUT 300 RUN_SERIAL TRUE)
endif()
