import torch
from modeling_llama_dcomp import LlamaDCompForCausalLM, record_computer_runs
from library.loading import load_tokenizer
from library.tasks import arithmetic_task
m = LlamaDCompForCausalLM.from_pretrained("/work/runs/smol_frozen/checkpoint-200").eval(); t = load_tokenizer("/work/runs/smol_frozen/checkpoint-200")
val = arithmetic_task(operations=("add","sub","mul","div"), train_size=8000, validation_size=160, test_size=400, max_digits=5, seed=0)["validation"]
for r in list(val)[:8]:
    ids = t(r["text"] + " ", return_tensors="pt")
    with record_computer_runs() as runs:
        out = m.generate(**ids, max_new_tokens=10, do_sample=False)
    fired = [(run.positions.nonzero()[:,1].tolist(), [m.computer.program_names[i] for i in run.program_probs.argmax(-1).tolist()]) for run in runs if run.positions.any()]
    print(repr(r["text"]), r["answer_text"], repr(t.decode(out[0, ids.input_ids.shape[1]:])), ids.input_ids.shape[1], fired)
