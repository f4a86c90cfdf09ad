"""`dolphind top`: the Command Center's panels in a terminal (Textual), fed by the ops HTTP."""
