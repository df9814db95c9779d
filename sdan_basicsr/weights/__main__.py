"""``python -m sdan_basicsr.weights CHECKPOINT -opt OPTIONS``: export a checkpoint as shippable weights."""
from sdan_basicsr.weights import main

main()
