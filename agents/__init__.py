"""ARPO: the LangGraph reverse-prompt agent, the batch job, evaluation and prompt editing."""
