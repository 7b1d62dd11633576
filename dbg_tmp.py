import torch
from library.loading import load_model, load_tokenizer
from library.tasks import arithmetic_task
from modeling_llama_dcomp import record_computer_runs
m = load_model("/work/runs/binary5").eval(); t = load_tokenizer("/work/runs/binary5")
test = arithmetic_task(operations=("add","sub","mul","div"), train_size=16000, validation_size=300, test_size=1000, max_digits=5, seed=0)["test"]
rows = [r for r in test if r["operation"] == "div"][:40]
bad = 0
for r in rows:
    ids = t(r["text"] + " ", return_tensors="pt")
    with record_computer_runs() as runs:
        out = m.generate(**ids, max_new_tokens=12, do_sample=False)
    ans = t.decode(out[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
    if ans.strip() != r["answer_text"]:
        bad += 1
        run = runs[0]
        print(repr(r["text"]), r["answer_text"], repr(ans), [(m.computer.program_names[i], round(float(p),2)) for i,p in enumerate(run.program_probs[0])] if run.program_probs.shape[0] else "no fire", m.computer.machine.values.most_likely(run.input_probs[0])[0].tolist() if run.program_probs.shape[0] else "")
print(bad, len(rows))
