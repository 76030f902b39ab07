"""The checkpoint zoo: its storage (store), its collection on Ray (collect) and zoos derived from it (derive)."""
